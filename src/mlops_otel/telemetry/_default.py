"""The lazily created process-wide default :class:`Telemetry`."""

from __future__ import annotations

import threading

from ._telemetry import Telemetry

__all__ = ["default_telemetry", "set_default_telemetry"]


class _Slot:
    """Holds the default instance; created on first use, replaced by ``configure()``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value: Telemetry | None = None


_SLOT = _Slot()


def default_telemetry() -> Telemetry:
    """Return the default :class:`Telemetry`, creating it (global providers) on first use."""
    value = _SLOT.value
    if value is not None:
        return value
    with _SLOT.lock:
        if _SLOT.value is None:
            _SLOT.value = Telemetry()
        return _SLOT.value


def set_default_telemetry(telemetry: Telemetry | None) -> Telemetry | None:
    """Install *telemetry* as the default (``None``: recreate lazily); return the previous one."""
    with _SLOT.lock:
        previous, _SLOT.value = _SLOT.value, telemetry
    return previous

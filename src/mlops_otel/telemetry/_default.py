"""The default :class:`Telemetry`: the default runtime's, not a slot of its own.

There is one default slot in the package, the default :class:`~mlops_otel.Runtime`
(see :func:`mlops_otel.configure`). This layer sits below the runtime, so the
runtime module installs, when it is imported, the function that resolves the
default; nothing is created until :func:`default_telemetry` is first called.
"""

from __future__ import annotations

from collections.abc import Callable

from ._telemetry import Telemetry

__all__ = ["default_telemetry", "set_default_telemetry", "use_default_resolver"]


class _Resolver:
    """Where the default comes from (installed once by ``mlops_otel._runtime``)."""

    __slots__ = ("resolve",)

    def __init__(self) -> None:
        self.resolve: Callable[[], Telemetry] | None = None


_RESOLVER = _Resolver()


def use_default_resolver(resolve: Callable[[], Telemetry]) -> None:
    """Make :func:`default_telemetry` return ``resolve()`` (called by the runtime layer)."""
    _RESOLVER.resolve = resolve


def default_telemetry() -> Telemetry:
    """The default runtime's :class:`Telemetry` (the runtime is created on first use)."""
    resolve = _RESOLVER.resolve
    if resolve is None:  # pragma: no cover - importing this package always imports mlops_otel first
        raise RuntimeError("mlops_otel is not initialised: import mlops_otel before using its default telemetry")
    return resolve()


def set_default_telemetry(telemetry: Telemetry | None) -> Telemetry | None:
    """Removed in 0.2: the default telemetry is the default runtime's.

    Raises :class:`TypeError` naming the replacement.
    """
    raise TypeError(
        "set_default_telemetry() was removed: the default telemetry is the default runtime's. "
        "Use mlops_otel.configure(...) to install a new default, or "
        "mlops_otel.install_default(mlops_otel.Runtime(telemetry, mlops_otel.MemoryStore(telemetry=telemetry)))"
    )

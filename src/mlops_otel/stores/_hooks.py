"""What a store calls back: the owners buffering into it, and the listeners of a state loss.

Both stores hold one :class:`StoreHooks`. Callbacks are held weakly when they are
bound methods, so registering never keeps an owner alive.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

import attrs

__all__ = ["StoreHooks"]

logger = logging.getLogger("mlops_otel.stores")

_Ref = Callable[[], Callable[[], None] | None]


def _weak(callback: Callable[[], None]) -> _Ref:
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        return weakref.WeakMethod(callback)
    return lambda: callback


@attrs.define(eq=False)
class StoreHooks:
    """Owners to drain before a close, and listeners to call when the shared state was lost."""

    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _owners: list[_Ref] = attrs.field(factory=list, init=False)
    _listeners: list[_Ref] = attrs.field(factory=list, init=False)
    _feeders: list[_Ref] = attrs.field(factory=list, init=False)

    def add_owner(self, hand_over: Callable[[], None]) -> None:
        """Register *hand_over*: it moves what an owner buffers into the store (called first by ``close``)."""
        with self._lock:
            self._owners.append(_weak(hand_over))

    def add_feeder(self, hand_over: Callable[[], None]) -> None:
        """Register *hand_over*, called by :meth:`feed` (the store's flusher, before each delivery)."""
        with self._lock:
            self._feeders.append(_weak(hand_over))

    def feed(self) -> None:
        """Call every live feeder (a fault is logged, not raised)."""
        if not self._feeders:
            return
        for hand_over in self._live(self._feeders):
            try:
                hand_over()
            except Exception:
                logger.exception("mlops-otel: a buffer failed to hand its data to the store's flusher")

    def add_state_loss_listener(self, callback: Callable[[], None]) -> None:
        """Register *callback*, called (on a background thread) after the store's state was lost."""
        with self._lock:
            self._listeners.append(_weak(callback))

    def _live(self, refs: list[_Ref]) -> list[Callable[[], None]]:
        with self._lock:
            pairs = [(ref, ref()) for ref in refs]
            refs[:] = [ref for ref, cb in pairs if cb is not None]
        return [cb for _, cb in pairs if cb is not None]

    def drain_owners(self) -> None:
        """Hand every live owner's buffered data to the store; an owner's fault is logged, not raised."""
        for hand_over in self._live(self._owners):
            try:
                hand_over()
            except Exception:
                logger.exception("mlops-otel: an owner failed to hand its buffered data to the store")

    def state_lost(self) -> None:
        """Call every live listener (each fault logged, not raised)."""
        for callback in self._live(self._listeners):
            try:
                callback()
            except Exception:
                logger.exception("mlops-otel: a state-loss listener failed")

"""Pre-aggregation of hot-path increments before they reach a store."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from operator import add

import attrs

from .._forksafe import after_fork_in_child
from .._worker import PeriodicWorker
from ..validation import InvalidValueError
from ._protocol import StateStore

__all__ = ["CounterBuffer"]

_MAX = sys.float_info.max


def _overflows(values: Sequence[float]) -> bool:
    return not all(-_MAX <= v <= _MAX for v in values)


@attrs.define(eq=False)
class CounterBuffer:
    """Sums increments of a fixed tuple of *fields* per key in process memory.

    :meth:`add` costs a dict lookup and one element-wise addition under a lock
    (about half a microsecond for eight fields), where building a mapping and
    passing it through :meth:`StateStore.incr` costs several times that. A
    background thread hands the sums to ``store.incr`` every *interval*
    seconds; call :meth:`flush` before reading the keys, so a read sees every
    increment this process made. Values must already be validated finite
    floats (the owners validate on their hot paths).

    A store that delivers in the background itself (``RedisStore``, through its
    ``add_feeder``) calls :meth:`flush` from its flusher right before each
    delivery instead: no thread of the buffer's own, and the sums reach the
    store's server in the same tick (*interval* is then the store's flush interval).
    """

    store: StateStore
    fields: tuple[str, ...]
    interval: float = attrs.field(default=0.1, kw_only=True)
    #: Called with the exception when ``store.incr`` raises (a store breaking its contract).
    on_fault: Callable[[BaseException], None] | None = attrs.field(default=None, kw_only=True)
    #: Called with ``(field, value)`` for each rejected value (non-finite, or a sum that would overflow).
    on_invalid: Callable[[str, float], None] | None = attrs.field(default=None, kw_only=True)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    # Held across taking the sums and handing them to the store, so a flush() that returns has
    # seen every earlier add() delivered, even one the background thread was delivering.
    _deliver_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _pending: dict[str, list[float]] = attrs.field(factory=dict, init=False, repr=False)
    _worker: PeriodicWorker[CounterBuffer] = attrs.field(init=False, repr=False)
    #: The store's "start or wake your flusher" when the store's flusher feeds on this buffer, else None.
    _fed_by: Callable[[], None] | None = attrs.field(default=None, init=False, repr=False)
    #: Whether the thread that flushes this buffer (its own, or the store's) was started in this process.
    _started: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise InvalidValueError("fields", "distinct field names", self.fields)
        if not 0 < self.interval < float("inf"):
            raise InvalidValueError("interval", "a positive number of seconds", self.interval)
        # The flusher thread (started by the first add) holds this buffer weakly: a buffer dropped
        # without close() is freed and its thread exits. Faults of the store are reported by
        # _hand_over itself; the worker's on_error is never reached by a flush.
        self._worker = PeriodicWorker(self, CounterBuffer.flush, name="mlops-otel-counter-buffer",
                                      interval=self.interval)
        after_fork_in_child(self, CounterBuffer._after_fork)
        # Exit order: no atexit hook of its own. Closing the store (the runtime's exit hook closes
        # owners, then the store; a store used without a Runtime closes itself at exit) first hands
        # these sums over: the store holds this flush weakly as an owner.
        add_owner = getattr(self.store, "add_owner", None)
        if callable(add_owner):
            add_owner(self.flush)
        add_feeder = getattr(self.store, "add_feeder", None)
        if callable(add_feeder):
            start = add_feeder(self.flush)
            self._fed_by = start if callable(start) else None

    def _after_fork(self) -> None:
        # The parent delivers what it buffered; the child starts empty, with its own thread.
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._pending = {}
        self._started = False
        self._worker.after_fork()  # the next add() starts the child's flusher (or the store's)

    def add(self, key: str, values: Sequence[float]) -> None:
        """Add *values* (one per field, in order) to the pending sums of *key*.

        One add with a value that is not finite, or whose addition would
        overflow a pending sum, is rejected alone (each offending field is
        reported to *on_invalid*), so one absurd value can never poison the sums
        of a batch.
        """
        # sum() of the new sums is finite when every one is (NaN and infinity propagate, and a
        # non-finite value makes its sum non-finite): one C-level pass on the hot path; only when
        # it fails do we look at each field (a finite sum overflowing is a false alarm).
        with self._lock:
            acc = self._pending.get(key)
            first = not self._pending
            merged = list(values) if acc is None else list(map(add, acc, values))
            if -_MAX <= sum(merged) <= _MAX or not _overflows(merged):
                self._pending[key] = merged
                merged = None  # type: ignore[assignment]  # accepted
        if merged is not None:
            self._bad(values, merged)
            return
        if not self._started:
            self._start()
        elif first and self._fed_by is not None:
            self._fed_by()  # the first sum since the last hand-over: wake the store's flusher if it is parked

    def _start(self) -> None:
        self._started = True
        if self._fed_by is not None:
            self._fed_by()
        else:
            self._worker.start()

    def _bad(self, values: Sequence[float], check: Sequence[float]) -> bool:
        """Report the fields whose *check* value is not finite; return whether there was one."""
        bad = [(f, v) for f, v, c in zip(self.fields, values, check, strict=True) if not -_MAX <= c <= _MAX]
        if self.on_invalid is not None:
            for field, value in bad:
                self.on_invalid(field, value)
        return bool(bad)

    def flush(self) -> None:
        """Hand every pending sum to the store (whose ``incr`` never raises)."""
        with self._deliver_lock:
            with self._lock:
                if not self._pending:
                    return
                pending, self._pending = self._pending, {}
            self._hand_over(pending)

    def _hand_over(self, pending: dict[str, list[float]]) -> None:
        for key, sums in pending.items():
            try:
                self.store.incr(key, dict(zip(self.fields, sums, strict=True)))
            except Exception as exc:  # incr must not raise; a store that does loses this key's sums
                if self.on_fault is not None:
                    self.on_fault(exc)

    def deliver(self, timeout: float | None = None) -> bool:
        """:meth:`flush`, then the store's own flush: ``True`` when nothing remains pending."""
        self.flush()
        return self.store.flush(timeout)

    def close(self) -> None:
        """Stop the thread and flush. Idempotent."""
        self._worker.stop()
        self.flush()

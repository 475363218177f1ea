"""Writes deferred off the request path, applied in batches before every read.

Measured in the example service (#16): the SDK's code on a request costs several times what
a tight microbenchmark loop of the same calls costs (``prediction()``: about 36 µs per request
in the service against 7 µs in a loop), because between two requests the model, the web
framework and the serialiser evict it from the CPU's caches: every request runs it cold. The
same work applied in a batch runs warm. So the integration paths (``prediction()``'s exit,
``track_diagnosis_request``, ``track_stage`` and the GenAI metrics) only
*append* their already-validated write to this queue when nothing on the request needs it
synchronously (no recording span, whose exemplar or attributes would need the request's
context; no OTel passthrough instruments), and :class:`Deferred` applies the queue:

* on its own daemon thread every *interval* seconds (half a second: batches large enough to run
  warm), or as soon as 2,048 writes wait, in slices that hand the GIL over (``time.sleep(0)``)
  after about half a millisecond of work;
* before every read: ``Telemetry.snapshot()`` (``/metrics``, OTLP, the fleet view), and the
  cores' reads and decisions (registry, A/B manager and drift detectors call
  ``Telemetry.apply_pending()`` first), so a read or a decision always sees every write a
  request made before it (and nothing is decided on data still in this queue);
* inline on the writing thread once *limit* writes are waiting (a drainer that cannot keep
  up: memory stays bounded, the writers pay);
* at close, and never in a forked child (the child starts with an empty queue).

Writes are applied in order, one at a time, each through the same code as an immediate write;
one that raises is reported to *on_fault* and the rest are applied.

>>> seen = []
>>> deferred = Deferred(on_fault=lambda reason, exc: None, interval=3600)
>>> deferred.defer(seen.append, 1)
>>> deferred.defer(seen.append, 2)
>>> seen
[]
>>> deferred.apply()
>>> seen
[1, 2]
>>> deferred.close()
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from .._forksafe import after_fork_in_child
from .._worker import PeriodicWorker
from ..validation import positive

__all__ = ["Deferred"]

#: GIL hand-over period of a background drain (seconds of work between two ``time.sleep(0)``).
_SLICE = 0.0005
#: Queued writes at which the background thread is woken before its interval ends (a burst).
_WAKE_AT = 2048


@attrs.define(eq=False)
class Deferred:
    """A queue of ``fn(*args)`` writes, applied in order off the request path and before reads."""

    #: ``on_fault(reason, exc)`` for a write that raised (Telemetry's ``fault``; must not hold an owner).
    on_fault: Callable[[str, BaseException], None]
    interval: float = attrs.field(default=0.5, kw_only=True, validator=positive())
    limit: int = attrs.field(default=20_000, kw_only=True, validator=positive(integer=True))
    _queue: deque[tuple[Callable[..., object], tuple[Any, ...]]] = attrs.field(factory=deque, init=False,
                                                                               repr=False)
    # Reentrant: a write may itself lead to a read (a drift check run inline) that applies the rest.
    _lock: threading.RLock = attrs.field(factory=threading.RLock, init=False, repr=False)
    _worker: PeriodicWorker[Deferred] = attrs.field(init=False, repr=False)
    # Apply each write at once: after close(), or when no thread could be started.
    _inline: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._worker = PeriodicWorker(self, Deferred._drain, name="mlops-otel-deferred", interval=self.interval)
        after_fork_in_child(self, Deferred._after_fork)

    def _after_fork(self) -> None:
        # The parent applies its own queue; the child's writes start a new one (and a new thread).
        self._queue = deque()
        self._lock = threading.RLock()
        self._worker.after_fork()

    @property
    def pending(self) -> int:
        """How many writes wait to be applied."""
        return len(self._queue)

    def defer(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` (applied in order, before the next read); after :meth:`close`, apply it now."""
        queue = self._queue
        queue.append((fn, args))
        n = len(queue)
        if n == _WAKE_AT or n >= self.limit or self._inline or not self._worker.started:
            self._slow_path(n)

    def _slow_path(self, n: int) -> None:
        if self._inline or n >= self.limit:  # closed, no thread, or a drainer that cannot keep up: apply here
            self.apply()
        elif not self._worker.started:
            try:
                self._worker.start()
            except Exception as exc:  # e.g. "can't start new thread": never into the request; apply here from now on
                self._inline = True
                with contextlib.suppress(Exception):
                    self.on_fault("deferred.thread", exc)
                self.apply()
        else:  # a burst: the drainer starts now rather than at the end of its interval
            self._worker.wake()

    def apply(self) -> None:
        """Apply every queued write now (those queued while this runs too); never raises.

        Always takes the lock, even with nothing queued: a write the background thread has taken off
        the queue but not finished is applied when this returns.
        """
        with self._lock:
            self._run(None)

    def _drain(self) -> None:
        """The background thread's run: everything queued, handing the GIL over between slices."""
        if not self._queue:
            return
        with self._lock:
            self._run(_SLICE)

    def _run(self, slice_s: float | None) -> None:
        queue = self._queue
        popleft = queue.popleft
        clock = time.perf_counter
        until = None if slice_s is None else clock() + slice_s
        n = 0
        while True:
            try:
                fn, args = popleft()
            except IndexError:
                return
            try:
                fn(*args)
            except Exception as exc:  # one broken write must not keep the others from being applied
                with contextlib.suppress(Exception):  # a broken fault hook must not stop the queue
                    self.on_fault("deferred", exc)
            n += 1
            if until is not None and not n & 15 and clock() >= until:
                time.sleep(0)  # let a request thread waiting for the GIL run
                until = clock() + slice_s  # type: ignore[operator]  # slice_s is set with until

    def close(self) -> None:
        """Stop the thread and apply what is queued; later writes are applied at once. Idempotent."""
        self._inline = True
        self._worker.stop()
        self.apply()

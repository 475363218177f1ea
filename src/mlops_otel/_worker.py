"""The one background-worker helper: a periodic daemon thread that never keeps its owner alive.

Every owner that works off the request path (the OTLP pusher, the fleet view,
store flushers, drift checks) should run on a :class:`PeriodicWorker` so that
they all share one policy:

* the thread holds its owner only through a weak reference between runs, and
  exits when the owner is collected (an owner that was never closed does not
  leak a thread forever);
* :meth:`PeriodicWorker.stop` wakes the thread, joins it with a timeout and never
  joins itself (safe to call from the task or from a finaliser);
* a task that raises is reported to *on_error* and the thread keeps running;
* threads do not survive ``fork()``: :meth:`PeriodicWorker.after_fork` forgets the
  parent's thread, and the next :meth:`PeriodicWorker.start` starts the child's.

What happens *at exit* is not decided here: :meth:`mlops_otel.Runtime.close` states the
flush order (owners, then the store, then telemetry) in one place.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PeriodicWorker"]

T = TypeVar("T")


def _loop(
    ref: weakref.ReferenceType[T],
    task: Callable[[T], object],
    interval: float,
    stop: threading.Event,
    wake: threading.Event,
    on_error: Callable[[str, BaseException], None] | None,
    name: str,
    run_first: bool,
) -> None:
    first = run_first
    while True:
        if not first:
            wake.wait(interval)
            wake.clear()
        first = False
        if stop.is_set():
            return
        owner = ref()
        if owner is None:  # collected without close(): nothing left to work for
            return
        try:
            task(owner)
        except Exception as exc:  # the worker survives any one failed run
            if on_error is not None:
                with contextlib.suppress(Exception):  # a broken error hook must not kill the thread
                    on_error(name, exc)
        del owner


class PeriodicWorker(Generic[T]):
    """Run ``task(owner)`` every *interval* seconds (and on :meth:`wake`) on one daemon thread.

    >>> runs = []
    >>> class Owner:
    ...     pass
    >>> owner = Owner()
    >>> worker = PeriodicWorker(owner, lambda o: runs.append(o), name="doc", interval=3600, run_first=True)
    >>> worker.start()
    >>> worker.stop()
    >>> runs == [owner]
    True
    """

    def __init__(
        self,
        owner: T,
        task: Callable[[T], object],
        *,
        name: str,
        interval: float,
        on_error: Callable[[str, BaseException], None] | None = None,
        run_first: bool = False,
    ) -> None:
        if not 0 < interval < float("inf"):
            from .validation import InvalidValueError

            raise InvalidValueError("interval", "a positive finite number of seconds", interval)
        self._ref = weakref.ref(owner)
        self._task = task
        self.name = name
        self.interval = interval
        self._on_error = on_error
        self._run_first = run_first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread unless it runs or the worker was stopped (idempotent; restarts after a fork)."""
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(
                target=_loop,
                args=(self._ref, self._task, self.interval, self._stop, self._wake, self._on_error, self.name,
                      self._run_first),
                name=self.name, daemon=True,
            )
            self._thread.start()

    def wake(self) -> None:
        """Run the task soon instead of at the end of the current interval."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (at most *timeout*, default the interval + 5 s). Idempotent."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(self.interval + 5.0 if timeout is None else timeout)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's thread and lock; :meth:`start` starts a new one."""
        stopped = self._stop.is_set()
        self._lock = threading.Lock()
        self._thread = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        if stopped:
            self._stop.set()

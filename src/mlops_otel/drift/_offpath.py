"""One worker thread per detector for the store I/O a local check needs (never on a request thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import attrs

from .._worker import PeriodicWorker

__all__ = ["OffPath"]

#: An idle worker thread exits after this many seconds (it is started again on demand).
IDLE_EXIT = 30.0


@attrs.define(eq=False)
class OffPath:
    """Runs one task at a time on a lazily started daemon thread; a task offered while one runs is dropped.

    Dropping is safe for the detector's tasks (learn the reference, share an
    alert transition): each is offered again at the next check. *inline* runs
    tasks on the caller's thread (the in-memory store, whose I/O is a dict lookup).
    The thread is an on-demand :class:`~mlops_otel._worker.PeriodicWorker`: started by
    :meth:`submit`, it exits after :data:`IDLE_EXIT` seconds without work, when this
    object is collected, or on :meth:`close`.
    """

    name: str
    inline: bool
    on_error: Callable[[Exception], None]
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _task: Callable[[], None] | None = attrs.field(default=None, init=False, repr=False)
    _busy: bool = attrs.field(default=False, init=False, repr=False)
    _worker: PeriodicWorker[OffPath] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._worker = self._new_worker()

    def _new_worker(self) -> PeriodicWorker[OffPath]:
        return PeriodicWorker(self, OffPath._run_pending, name=self.name, interval=IDLE_EXIT, on_demand=True)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._task, self._busy = None, False
        self._worker.after_fork()

    def submit(self, task: Callable[[], None]) -> bool:
        """Run *task* off the caller's thread; ``False`` when dropped because another one is under way."""
        if self.inline:
            self._run(task)
            return True
        with self._lock:
            if self._busy:
                return False
            self._busy = True
            self._task = task
        self._worker.wake()
        return True

    def _run(self, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception as exc:  # a background task must never kill its thread
            self.on_error(exc)

    def _run_pending(self) -> None:
        with self._lock:
            task, self._task = self._task, None
        try:
            if task is not None:
                self._run(task)
        finally:
            with self._lock:
                self._busy = False

    def close(self, timeout: float = 5.0) -> None:
        """Let the task under way finish (at most *timeout*) and end the thread now (not after the idle time).

        A later :meth:`submit` starts a new thread (a closed detector stays usable).
        """
        worker = self._worker
        self._worker = self._new_worker()
        worker.stop(timeout)
        with self._lock:
            pending = self._task is not None
        if pending:  # submitted to the old worker while it stopped: the new one runs it
            self._worker.wake()

    @property
    def busy(self) -> bool:
        return self._busy

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no task runs (tests and close); ``True`` when idle."""
        import time

        deadline = time.monotonic() + timeout
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.001)
        return not self._busy

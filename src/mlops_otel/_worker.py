"""The one background-worker helper: a periodic daemon thread that never keeps its owner alive.

Every owner that works off the request path runs on a :class:`PeriodicWorker`: the
OTLP pusher, the fleet view, the counter buffers' flushers, the registry's and the
A/B manager's view refreshers, the drift monitor's checker. They all share one policy:

* **daemon** threads named ``mlops-otel-<what>``, each a :class:`WorkerThread`;
* **weak owner**: the thread holds its owner only through a weak reference between
  runs, and exits when the owner is collected (an owner that was never closed does
  not leak a thread, nor is it kept alive by one). Neither *task* nor *on_error* may
  hold the owner strongly (pass an unbound method and a hook of something else, e.g.
  the owner's telemetry's ``fault``);
* **wake-up**: :meth:`PeriodicWorker.wake` runs the task now instead of at the end of
  the interval; a task may return the delay (seconds, a float or int that is not a
  ``bool``) until its next run, ``None`` or anything else means *interval*;
* **one schedule per process**: a run every *interval* lands on the process's *beats* of
  that interval (multiples of it from one phase per process, see :func:`until_beat`), so
  workers whose intervals divide each other run together: the deferred writes (0.5 s), the
  drift check and the A/B sync (1 s), the fleet document (2 s) make one burst of work and one
  batch for the store's flusher instead of several apart (#16: each burst wakes threads and
  takes the GIL from the requests). The phase differs between processes, so the workers of
  a server do not all burst at once. Within a beat each worker runs a few milliseconds after
  it, by a slot derived from its name (:func:`slot_offset`), so the workers of a beat run one
  after another instead of all waking at the same instant to queue for the GIL;
* **exceptions**: a task that raises is reported to *on_error* (the owners count it with
  ``Telemetry.fault``), never raised, and the thread keeps running;
* **stop/join**: :meth:`PeriodicWorker.stop` wakes the thread, joins it with a timeout
  and never joins itself (safe to call from the task or from a finaliser); a stopped
  worker never starts again;
* **fork**: threads do not survive ``fork()``. Each worker registers (through
  ``_forksafe``, weakly) a child hook that forgets the parent's thread, lock and events;
  :meth:`PeriodicWorker.start` then starts the child's thread. The reset is done once per
  process, so an owner may also call :meth:`PeriodicWorker.after_fork` from its own fork
  hook (to reset its state first and then restart the worker).

What happens *at exit* is not decided here: :meth:`mlops_otel.Runtime.close` states the
flush order (owners, then the store, then telemetry) in one place, and the runtime's one
``atexit`` hook runs it for a runtime that was never closed.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ._forksafe import after_fork_in_child

__all__ = ["PeriodicWorker", "WorkerThread", "fault_hook"]

T = TypeVar("T")

#: Every worker thread's name starts with this.
PREFIX = "mlops-otel-"


class WorkerThread(threading.Thread):
    """The thread class of every :class:`PeriodicWorker` (so tests and tools can tell them apart)."""


class _Faults(Protocol):
    def fault(self, reason: str, exc: BaseException) -> None: ...


def fault_hook(owner: T, telemetry_of: Callable[[T], _Faults], reason: str) -> Callable[[str, BaseException], None]:
    """An *on_error* hook counting ``telemetry_of(owner).fault(reason, exc)``, holding *owner* weakly.

    Never pass ``owner.telemetry.fault`` itself: the telemetry may hold the owner (the fleet view
    is its exposition source), and the thread would then keep the owner alive.
    """
    ref = weakref.ref(owner)

    def on_error(_: str, exc: BaseException) -> None:
        target = ref()
        if target is not None:
            telemetry_of(target).fault(reason, exc)

    return on_error


def _set(event: threading.Event) -> None:
    event.set()


#: This process's beats are ``phase + k * interval``, the phase from the process id (Fibonacci hashing:
#: consecutive ids far apart), in seconds of the monotonic clock.
_PHASE_STEP = 0.6180339887498949
#: Slots within a beat: a worker runs ``slot * _SLOT_S`` after it, the slot from its name.
_SLOTS = 8
_SLOT_S = 0.003


def slot_offset(name: str) -> float:
    """The seconds after each beat that the worker named *name* runs (0 to 21 ms, by its name's CRC-32).

    The names of the SDK's beat-scheduled workers have distinct slots (tests/test_threads.py checks it).
    """
    return (zlib.crc32(name.encode()) % _SLOTS) * _SLOT_S


def until_beat(interval: float, now: float | None = None, *, pid: int | None = None, offset: float = 0.0) -> float:
    """Seconds from *now* (default: the monotonic clock) to this process's next beat of *interval*
    (plus *offset*, a worker's :func:`slot_offset`).

    At least a quarter of *interval* (a run just after a beat, e.g. a woken one, skips to the
    following beat rather than running again at once), at most 1.25 *interval*.

    >>> phase = (7 * _PHASE_STEP) % 1.0
    >>> round(until_beat(0.5, phase + 10.1, pid=7), 6)  # beats at phase + 10.0, 10.5, ...
    0.4
    >>> round(until_beat(0.5, phase + 10.45, pid=7), 6)  # 0.05 to the beat is too soon: the next one
    0.55
    """
    now = time.monotonic() if now is None else now
    phase = ((os.getpid() if pid is None else pid) * _PHASE_STEP) % 1.0 + offset
    delay = interval - (now - phase) % interval
    return delay + interval if delay < interval / 4 else delay


def _delay(result: object, interval: float, on_demand: bool, offset: float) -> float:
    if isinstance(result, (int, float)) and not isinstance(result, bool) and 0 <= result < float("inf"):
        return float(result)
    # On demand: the interval is the idle timeout, not a schedule.
    return interval if on_demand else until_beat(interval, offset=offset)


def _loop(
    worker_ref: weakref.ReferenceType[PeriodicWorker[T]],
    ref: weakref.ReferenceType[T],
    task: Callable[[T], object],
    interval: float,
    stop: threading.Event,
    wake: threading.Event,
    on_error: Callable[[str, BaseException], None] | None,
    name: str,
    run_first: bool,
    on_demand: bool,
) -> None:
    first = run_first
    offset = slot_offset(name)
    delay = _delay(None, interval, on_demand, offset)
    while True:
        if not first:
            woke = wake.wait(delay)
            if on_demand and not woke:  # idle for a whole interval: retire unless a wake-up just came
                worker = worker_ref()
                if worker is None or worker._retire(threading.current_thread()):
                    return
                del worker
                continue
            wake.clear()
        first = False
        if stop.is_set():
            return
        owner = ref()
        if owner is None:  # collected without close(): nothing left to work for
            return
        result: object = None
        try:
            result = task(owner)
        except Exception as exc:  # the worker survives any one failed run
            if on_error is not None:
                with contextlib.suppress(Exception):  # a broken error hook must not kill the thread
                    on_error(name, exc)
        del owner
        delay = _delay(result, interval, on_demand, offset)


class PeriodicWorker(Generic[T]):
    """Run ``task(owner)`` every *interval* seconds (and on :meth:`wake`) on one daemon thread.

    With *on_demand*, the task runs only when woken, and the thread exits after *interval*
    seconds without a wake-up; the next :meth:`wake` starts a new one (for rare work, so an
    idle owner costs no thread).

    >>> runs = []
    >>> class Owner:
    ...     pass
    >>> owner = Owner()
    >>> worker = PeriodicWorker(owner, lambda o: runs.append(o), name="mlops-otel-doc", interval=3600,
    ...                         run_first=True)
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
        on_demand: bool = False,
    ) -> None:
        from .validation import InvalidValueError

        if not (isinstance(interval, (int, float)) and not isinstance(interval, bool)
                and 0 < interval < float("inf")):
            raise InvalidValueError("interval", "a positive finite number of seconds", interval)
        self._ref = weakref.ref(owner)
        self._on_demand = on_demand
        self._task = task
        self.name = name
        self.interval = float(interval)
        self._on_error = on_error
        self._run_first = run_first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: WorkerThread | None = None
        # Wake the thread when the owner is collected: it finds the owner gone and exits at once
        # (a finaliser, not a weakref callback: this worker is usually collected with its owner).
        self._finalizer = weakref.finalize(owner, _set, self._wake)
        self._finalizer.atexit = False
        #: Whether :meth:`start` started a thread in this process (a plain attribute: cheap on hot paths).
        self.started = False
        self._pid = os.getpid()
        after_fork_in_child(self, PeriodicWorker.after_fork)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        """The current thread (``None`` before the first :meth:`start` in this process)."""
        return self._thread

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop.is_set()

    def start(self) -> None:
        """Start the thread unless it runs or the worker was stopped (idempotent; restarts after a fork)."""
        with self._lock:
            if self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._spawn()

    def _spawn(self) -> None:  # under self._lock
        self._thread = WorkerThread(
            target=_loop,
            args=(weakref.ref(self), self._ref, self._task, self.interval, self._stop, self._wake,
                  self._on_error, self.name, self._run_first, self._on_demand),
            name=self.name, daemon=True,
        )
        self._thread.start()
        self.started = True

    def _retire(self, thread: threading.Thread) -> bool:
        """An on-demand thread idle for an interval asks to exit: ``False`` when a wake-up came meanwhile."""
        with self._lock:
            if self._wake.is_set() and not self._stop.is_set():
                return False
            if self._thread is thread:
                self._thread = None
            return True

    def wake(self) -> None:
        """Run the task soon instead of at the end of the current delay.

        An *on_demand* worker (see the class) starts its thread here when it has none.
        """
        if not self._on_demand:
            self._wake.set()
            return
        with self._lock:
            self._wake.set()
            if not self._stop.is_set() and (self._thread is None or not self._thread.is_alive()):
                self._spawn()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread and wait for it (at most *timeout*, default the interval + 5 s). Idempotent."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(self.interval + 5.0 if timeout is None else timeout)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's thread, lock and events (once per process).

        :meth:`start` then starts the child's thread; a worker stopped before the fork stays stopped.
        """
        pid = os.getpid()
        if pid == self._pid:
            return
        self._pid = pid
        stopped = self._stop.is_set()
        self._lock = threading.Lock()
        self._thread = None
        self.started = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        if stopped:
            self._stop.set()
        self._finalizer.detach()
        owner = self._ref()
        if owner is not None:
            self._finalizer = weakref.finalize(owner, _set, self._wake)
            self._finalizer.atexit = False

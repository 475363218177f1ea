"""The shadow runner: the challenger runs on sampled requests off the request path."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import attrs

from .. import semconv
from ..drift import ks_2samp
from ..telemetry import Telemetry, default_telemetry
from ..validation import InvalidValueError
from ._config import ShadowConfig
from ._report import ShadowReport, summarize

__all__ = ["ShadowCall", "ShadowRunner"]

log = logging.getLogger("mlops_otel.shadow")

_STOP = object()


class _InvalidOutputError(ValueError):
    """The challenger's output lacks a declared output or has a non-finite value."""


def _values(output: object, names: tuple[str, ...], who: str) -> dict[str, float]:
    if not isinstance(output, Mapping):
        raise _InvalidOutputError(f"{who} output must be a mapping of output name to number, got {output!r}")
    values = {}
    for name in names:
        v = output.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _InvalidOutputError(f"{who} output {name!r} must be a finite number, got {v!r}")
        values[name] = float(v)
    return values


@attrs.define(eq=False)
class _Tally:
    """What the workers accumulate (guarded by ``lock``)."""

    config: ShadowConfig
    lock: threading.Condition = attrs.field(factory=lambda: threading.Condition(threading.Lock()))
    submitted: int = 0  # sampled requests offered to the queue (accepted or dropped)
    accepted: int = 0
    sampled_out: int = 0
    dropped: int = 0
    completed: int = 0
    finished: int = 0  # accepted pairs the workers are done with (completed, failed or dropped at close)
    errors: dict[str, int] = attrs.field(factory=dict)
    disagreements: dict[str, int] = attrs.field(factory=dict)
    difference_sums: dict[str, float] = attrs.field(factory=dict)
    challenger_ms: deque[float] = attrs.field(init=False)
    champion_ms: deque[float] = attrs.field(init=False)
    champion_out: dict[str, deque[float]] = attrs.field(init=False)
    challenger_out: dict[str, deque[float]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        w = self.config.window
        self.challenger_ms = deque(maxlen=w)
        self.champion_ms = deque(maxlen=w)
        self.champion_out = {o: deque(maxlen=w) for o in self.config.outputs}
        self.challenger_out = {o: deque(maxlen=w) for o in self.config.outputs}


@attrs.define(eq=False)
class _Job:
    inputs: Any
    champion: dict[str, float]
    champion_ms: float | None


def _work(
    jobs: queue.SimpleQueue[Any], tally: _Tally, challenger: Callable[[Any], Any], tel: Callable[[], Telemetry],
    executor: Executor | None,
) -> None:
    """One worker thread: run the challenger on queued pairs until the stop marker."""
    cfg = tally.config
    mt, version = cfg.model_type, cfg.challenger_version
    outputs = cfg.outputs
    loop: asyncio.AbstractEventLoop | None = None
    try:
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            start = time.perf_counter()
            error: str | None = None
            values: dict[str, float] = {}
            try:
                if executor is not None:  # e.g. a process pool: the challenger never holds this process's GIL
                    result = executor.submit(challenger, job.inputs).result()
                else:
                    result = challenger(job.inputs)
                if inspect.isawaitable(result):
                    if loop is None:
                        loop = asyncio.new_event_loop()
                    result = loop.run_until_complete(result)
                elapsed = time.perf_counter() - start
                values = _values(result, outputs, "challenger")
            except _InvalidOutputError:
                elapsed = time.perf_counter() - start
                error = "invalid_output"
            except Exception as exc:  # the challenger's failure is a measurement, never the caller's problem
                elapsed = time.perf_counter() - start
                error = type(exc).__name__
            _record(tally, tel(), job, values, error, elapsed, mt, version)
    finally:
        if loop is not None:
            loop.close()


def _record(tally: _Tally, t: Telemetry, job: _Job, values: dict[str, float], error: str | None,
            elapsed: float, mt: str, version: str) -> None:
    cfg = tally.config
    flagged: list[tuple[str, float, bool]] = []
    if error is None:
        flagged = [(c.name, *c.compare(job.champion[c.output], values[c.output])) for c in cfg.comparisons]
    refresh = False
    with tally.lock:
        tally.challenger_ms.append(elapsed * 1000.0)
        if job.champion_ms is not None:
            tally.champion_ms.append(job.champion_ms)
        if error is not None:
            tally.errors[error] = tally.errors.get(error, 0) + 1
        else:
            tally.completed += 1
            for name, diff, disagree in flagged:
                tally.difference_sums[name] = tally.difference_sums.get(name, 0.0) + diff
                if disagree:
                    tally.disagreements[name] = tally.disagreements.get(name, 0) + 1
            for o in cfg.outputs:
                tally.champion_out[o].append(job.champion[o])
                tally.challenger_out[o].append(values[o])
            refresh = tally.completed % cfg.drift_every == 0
    try:
        t.record(semconv.SHADOW_DURATION, (mt, version), elapsed)
        t.add(semconv.SHADOW_PAIRS, (mt, "error" if error is not None else "completed"))
        for name, diff, disagree in flagged:
            t.record(semconv.SHADOW_DIFFERENCE, (mt, name), diff)
            if disagree:
                t.add(semconv.SHADOW_DISAGREEMENTS, (mt, name))
        if refresh:
            _refresh_drift(tally, t)
    except Exception as exc:
        t.fault("shadow.record", exc)
    with tally.lock:  # last, so that drain() returns only once the pair is fully recorded
        tally.finished += 1
        tally.lock.notify_all()


def _refresh_drift(tally: _Tally, t: Telemetry) -> None:
    with tally.lock:
        windows = [(o, list(tally.champion_out[o]), list(tally.challenger_out[o])) for o in tally.config.outputs]
    for output, champ, chall in windows:
        if len(champ) >= 2:
            t.set(semconv.SHADOW_OUTPUT_DRIFT, (tally.config.model_type, output), ks_2samp(champ, chall).statistic)


def _shutdown(jobs: queue.SimpleQueue[Any], threads: list[threading.Thread]) -> None:
    for _ in threads:
        jobs.put(_STOP)


@attrs.frozen
class ShadowCall:
    """One request's inputs bound to a runner: what ``runtime.prediction(..., shadow=...)`` takes.

    The prediction submits the champion's observed outputs (``anomaly_score``,
    ``confidence`` and any numeric extra given to ``observe``) and its latency
    when the block succeeded and the request was not served by an A/B
    treatment.
    """

    runner: ShadowRunner
    inputs: Any

    def submit(self, champion_output: Mapping[str, float], *, champion_latency_ms: float | None = None) -> bool:
        """Queue the challenger on the bound inputs (see :meth:`ShadowRunner.submit`)."""
        return self.runner.submit(self.inputs, champion_output, champion_latency_ms=champion_latency_ms)


@attrs.define(eq=False)
class ShadowRunner:
    """Runs a challenger in the shadow of the champion, off the request path.

    Call :meth:`submit` after the response is produced (or as it is sent)
    with the request's inputs and the champion's outputs: a sampled share is
    queued for worker threads that call *challenger* (a function of the
    inputs returning a mapping of output name to number; a coroutine function
    runs on each worker's own event loop) and compare the outputs as
    :attr:`ShadowConfig.comparisons` declare. ``submit`` never raises and
    never waits: a full queue drops the pair and counts it. :meth:`report`
    summarises the run with a recommendation. :meth:`close` (or leaving the
    ``with`` block) stops accepting, gives the workers up to *timeout* to
    finish the queue, counts what is left as dropped and joins the threads.
    """

    config: ShadowConfig
    challenger: Callable[[Any], Any]
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True)
    #: Seed of the sampling draw (``None``: unpredictable); for reproducible tests.
    seed: int | None = attrs.field(default=None, kw_only=True)
    #: Where the challenger runs (``None``: on the worker threads). A ``ProcessPoolExecutor`` keeps a
    #: CPU-bound Python challenger off this process's GIL (the challenger and inputs must pickle);
    #: the runner does not own it and never shuts it down.
    executor: Executor | None = attrs.field(default=None, kw_only=True)

    _jobs: queue.SimpleQueue[Any] = attrs.field(init=False, repr=False)
    _outputs: tuple[str, ...] = attrs.field(init=False, repr=False)
    _tally: _Tally = attrs.field(init=False, repr=False)
    _threads: list[threading.Thread] = attrs.field(init=False, repr=False, factory=list)
    _random: Callable[[], float] = attrs.field(init=False, repr=False)
    _closed: bool = attrs.field(init=False, repr=False, default=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.config, ShadowConfig):
            raise InvalidValueError("config", "a ShadowConfig", self.config)
        if not callable(self.challenger):
            raise InvalidValueError("challenger", "a callable taking the request's inputs", self.challenger)
        # Unbounded (and C-implemented): submit() enforces queue_size itself, so the stop markers never block.
        self._jobs = queue.SimpleQueue()
        self._outputs = self.config.outputs
        self._tally = _Tally(self.config)
        self._random = random.Random(self.seed).random
        # The workers must not reference self, or the finalizer below could never run.
        fixed = self.telemetry
        tel: Callable[[], Telemetry] = default_telemetry if fixed is None else (lambda: fixed)
        for i in range(self.config.workers):
            thread = threading.Thread(target=_work, args=(self._jobs, self._tally, self.challenger, tel,
                                                          self.executor),
                                      name=f"mlops-shadow-{self.config.model_type}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        # An unclosed runner still stops its threads when it is garbage collected.
        weakref.finalize(self, _shutdown, self._jobs, self._threads)

    def _tel_now(self) -> Telemetry:
        return self.telemetry if self.telemetry is not None else default_telemetry()

    @property
    def pending(self) -> int:
        """Pairs accepted and not yet processed."""
        t = self._tally
        with t.lock:
            return t.accepted - t.finished

    def submit(self, inputs: Any, champion_output: Mapping[str, float], *,
               champion_latency_ms: float | None = None) -> bool:
        """Queue the challenger on *inputs* for a sampled share of calls; returns whether it was queued.

        *champion_output* holds the champion's values of the compared outputs
        (e.g. ``{"anomaly_score": 0.82}``); *champion_latency_ms*, when given,
        lets the report compare latencies. Never raises, never blocks.
        """
        t = self._tally
        try:
            if self._closed or self._random() >= self.config.sample_rate:
                with t.lock:
                    t.sampled_out += 1
                return False
            champion = _values(champion_output, self._outputs, "champion")
            if champion_latency_ms is not None and not (isinstance(champion_latency_ms, (int, float))
                                                        and 0 <= champion_latency_ms < math.inf):
                self._tel_now().invalid("shadow.champion_latency_ms", champion_latency_ms)
                champion_latency_ms = None
            with t.lock:  # count first: a fast worker may finish the job before put returns
                t.submitted += 1
                full = t.accepted - t.finished >= self.config.queue_size
                if full:
                    t.dropped += 1
                else:
                    t.accepted += 1
            if full:
                self._tel_now().add(semconv.SHADOW_PAIRS, (self.config.model_type, "dropped"))
                return False
            self._jobs.put_nowait(_Job(inputs, champion, champion_latency_ms))
            return True
        except _InvalidOutputError as exc:
            self._tel_now().invalid("shadow.champion_output", str(exc))
            return False
        except Exception as exc:  # the request path never fails because of the shadow
            self._tel_now().fault("shadow.submit", exc)
            return False

    def bind(self, inputs: Any) -> ShadowCall:
        """This request's *inputs*, for ``runtime.prediction(..., shadow=runner.bind(inputs))``."""
        return ShadowCall(self, inputs)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued pair was processed; returns whether that happened within *timeout*."""
        t = self._tally
        with t.lock:
            return t.lock.wait_for(lambda: t.finished >= t.accepted, timeout)

    def report(self) -> ShadowReport:
        """The run so far, with a recommendation (see :class:`ShadowConfig` for the rule)."""
        t = self._tally
        with t.lock:
            args: dict[str, Any] = {
                "submitted": t.submitted, "sampled_out": t.sampled_out, "dropped": t.dropped,
                "completed": t.completed, "errors": dict(t.errors), "disagreements": dict(t.disagreements),
                "difference_sums": dict(t.difference_sums), "challenger_latencies_ms": list(t.challenger_ms),
                "champion_latencies_ms": list(t.champion_ms),
                "champion_outputs": {k: list(v) for k, v in t.champion_out.items()},
                "challenger_outputs": {k: list(v) for k, v in t.challenger_out.items()},
            }
        return summarize(self.config, **args)

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop accepting pairs, let the workers finish the queue for up to *timeout* s, join them.

        Pairs still queued after *timeout* are dropped and counted. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        deadline = None if timeout is None else time.monotonic() + timeout
        self.drain(timeout)
        t = self._tally
        left = 0
        while True:  # whatever the workers did not reach in time
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                left += 1
        if left:
            with t.lock:
                t.dropped += left
                t.finished += left
                t.lock.notify_all()
            self._tel_now().add(semconv.SHADOW_PAIRS, (self.config.model_type, "dropped"), float(left))
        _shutdown(self._jobs, self._threads)
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
            if thread.is_alive():
                log.warning("shadow worker %s still runs the challenger after close(); left as a daemon",
                            thread.name)

    def __enter__(self) -> ShadowRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""``runtime.prediction()``: one call that records a prediction everywhere it belongs.

Replaces the five calls of 0.1 (``ab.assign_variant``, ``record_gnn_metrics``,
``ab.record_result``, ``registry.update_metrics`` and the drift detector's
``add_production_sample``) and the ``track_stage`` around them::

    with runtime.prediction("gnn", user_id=user) as p:
        model = models[p.version]
        score, confidence = model.predict(x)
        p.observe(anomaly_score=score, confidence=confidence)

On exit the result is recorded once into the seed metrics, the A/B test (when
the user is in one), the registry's running metrics and the version's drift
window. An exception inside the block is recorded as an error everywhere and
re-raised unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry.trace import NonRecordingSpan as _NonRecordingSpan

from . import semconv
from ._forksafe import after_fork_in_child
from .telemetry import PredictionWrites, StageTracker
from .validation import MAX_LATENCY_MS

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .ab import ABTestManager
    from .drift import DriftMonitor
    from .registry import ModelRegistry
    from .shadow import ShadowCall
    from .telemetry import Telemetry

__all__ = ["Prediction", "ShadowedPrediction", "current_prediction"]

F = TypeVar("F", bound=Callable[..., Any])

_CURRENT: contextvars.ContextVar[Prediction | None] = contextvars.ContextVar("mlops_otel_prediction", default=None)


_NO_EXTRA: Mapping[str, float | bool] = MappingProxyType({})
_GNN_STAGE = semconv.STAGE_GNN_INFERENCE
_NOT_ENTERED: Any = object()
_EXITED: Any = object()
_open_stage = StageTracker._open_traced  # no span while tracing cannot record one
_close_stage = StageTracker._close
_perf_counter = time.perf_counter


def current_prediction() -> Prediction | None:
    """The prediction of the innermost ``@runtime.prediction(...)``-decorated call of this task or thread.

    ``None`` outside one. (A ``with runtime.prediction(...) as p`` block already holds ``p``;
    it does not pay for a context variable on every prediction.)
    """
    return _CURRENT.get()


class _Handle:
    """What ``prediction()`` records into for one (model_type, version), looked up once per runtime.

    The registry's stats key (``None`` for an invalid name: the public method then counts it),
    the registry's and A/B manager's validated-input paths, the version's drift detector's
    ``add_production_sample`` (bound on its first observed prediction; the monitor never
    replaces a detector) and the fused telemetry writes of the last stage it was predicted in.
    """

    __slots__ = ("add_sample", "add_samples", "count_assignments", "record", "record_many", "stats_key", "update",
                 "update_many", "version", "writes")

    def __init__(self, version: str, registry: ModelRegistry, ab: ABTestManager) -> None:
        self.version = version
        self.update: Callable[[str, float | None, float | None, bool], None] = registry._update_checked
        self.update_many: Callable[[str, Sequence[float], Sequence[float]], None] = registry._update_checked_many
        self.record: Callable[[str, str, float | None, float | None, bool, bool], bool] = ab._record_checked
        self.record_many: Callable[[str, str, Sequence[float], Sequence[float]], bool] = ab._record_checked_many
        self.count_assignments: Callable[[str, str, int], None] = ab._count_assignments
        self.stats_key: str | None = None
        self.add_sample: Callable[..., None] | None = None
        self.add_samples: Callable[[Sequence[float], Sequence[float]], None] | None = None
        self.writes: PredictionWrites | None = None


class _Pending:
    """``prediction()``'s records queued off the request path by one runtime, applied together.

    One ``Telemetry.deferred`` write applies every record queued until then (:func:`_apply_pending`):
    a prediction queues that write only when none is scheduled. The applier clears *scheduled* before it
    takes the records, so a record appended after it took them schedules a new write: none is stranded.
    """

    __slots__ = ("__weakref__", "items", "scheduled")

    def __init__(self) -> None:
        self.items: deque[_Record] = deque()
        self.scheduled = False
        after_fork_in_child(self, _Pending._after_fork)

    def _after_fork(self) -> None:  # the parent applies its own; the child's queue (and its write) start empty
        self.items = deque()
        self.scheduled = False


# (handle, writes, test, variant, elapsed s, latency ms, anomaly score, confidence): a successful prediction
# whose every value the validated fast paths accept, with no span.
_Record = tuple[_Handle, PredictionWrites, "str | None", str, float, float, float, float]
#: From this many records of one version a batch is summed first (one lock round per part).
_MANY = 8


class Prediction:
    """One prediction of *model_type*: a context manager (``with``/``async with``) or a decorator.

    On entry the A/B manager assigns the variant: :attr:`version` is the model
    version to run (the treatment or control version inside a test, else the
    champion, else *default_version*), :attr:`variant` is ``"control"``,
    ``"treatment"`` or ``"champion"``, and :attr:`test` the test's name or
    ``None``. The block is timed and runs inside the *stage* span (default
    ``"<model_type>_inference"``; keyword *attributes* are added to that span).
    Call :meth:`observe` with the model's outputs. On exit:

    * seed metrics: ``gnn_*`` histograms (when both outputs were observed),
      ``diagnosis_duration_seconds{stage}``, the request's model version and,
      on an exception, ``diagnosis_errors_total{error_type,stage}``;
    * the registry's running metrics of :attr:`version`;
    * the A/B result of :attr:`variant` (only inside a test), with the extra
      metrics given to :meth:`observe`;
    * the drift sample of :attr:`version` (when both outputs were observed).

    A failed block records ``error=True`` in the registry and the A/B test
    (without latency and confidence, as 0.1's error path did) and re-raises the
    exception unchanged. Recording never raises: faults are counted in
    ``mlops_internal_errors_total``. A :class:`Prediction` is used once; the
    decorator form opens a new one per call.
    """

    # Slots (cheaper to read and write than an instance dict, and read many times per prediction).
    # Every public one is set in __init__; _start and _parts are set on entry and read only after it.
    # __weakref__ keeps a prediction weakly referenceable, as it was before it had slots.
    __slots__ = ("__weakref__", "_opened", "_parts", "_start", "anomaly_score", "attributes", "confidence",
                 "default_version", "embedding", "error_type", "extra", "features", "inference_time_ms",
                 "model_type", "runtime", "stage", "test", "user_id", "variant", "version")

    #: The model version to run (``None`` only when no test, champion or default names one).
    version: str | None
    #: ``"control"``, ``"treatment"`` or ``"champion"``.
    variant: str
    #: The A/B test this prediction is part of, or ``None``.
    test: str | None
    anomaly_score: float | None
    confidence: float | None
    features: Mapping[str, float | str] | None
    embedding: Sequence[float] | Any | None
    extra: Mapping[str, float | bool]
    #: Latency reported by :meth:`observe`; otherwise the block's wall time is used.
    inference_time_ms: float | None
    #: The exception's class name when the block failed.
    error_type: str | None
    default_version: str | None
    #: Extra span attributes given to ``runtime.prediction(...)`` (also A/B segment attributes), or ``None``.
    attributes: Mapping[str, Any] | None
    # The stage, through StageTracker._open_traced/_close (no tracker object per prediction): _NOT_ENTERED,
    # then the opened span (telemetry's private _Opened, or None when no span was opened), then _EXITED.
    _opened: Any
    _start: float
    _parts: tuple[Telemetry, ModelRegistry, ABTestManager, DriftMonitor]

    def __init__(
        self,
        runtime: Runtime,
        model_type: str,
        user_id: str | None = None,
        stage: str | None = None,
        default_version: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.runtime = runtime
        self.model_type = model_type
        self.user_id = user_id
        self.stage = stage if stage is not None else (
            _GNN_STAGE if model_type == "gnn" else f"{model_type}_inference")
        self.default_version = default_version
        self.attributes = attributes
        self.version = self.test = self.anomaly_score = self.confidence = self.features = self.embedding = None
        self.inference_time_ms = self.error_type = None
        self.variant = "champion"
        self.extra = _NO_EXTRA
        self._opened = _NOT_ENTERED

    def __repr__(self) -> str:
        return (f"Prediction(model_type={self.model_type!r}, version={self.version!r}, variant={self.variant!r}, "
                f"test={self.test!r})")

    # ----------------------------------------------------------------- outputs
    def observe(
        self,
        anomaly_score: float | None = None,
        confidence: float | None = None,
        *,
        features: Mapping[str, float | str] | None = None,
        embedding: Sequence[float] | Any | None = None,
        inference_time_ms: float | None = None,
        **extra: float | bool,
    ) -> None:
        """Take the model's outputs (recorded on exit; calling again replaces them).

        *features* and *embedding* go to the drift detector, *inference_time_ms*
        replaces the measured wall time of the block, *extra* named numbers or
        bools go to the A/B result as custom metrics.
        """
        self.anomaly_score = anomaly_score
        self.confidence = confidence
        self.features = features
        self.embedding = embedding
        if inference_time_ms is not None:
            self.inference_time_ms = inference_time_ms
        if extra:
            self.extra = extra

    # ------------------------------------------------------------------- scope
    def __enter__(self) -> Prediction:
        if self._opened is not _NOT_ENTERED:
            raise RuntimeError("a Prediction is used once: call runtime.prediction(...) for each prediction")
        rt = self.runtime
        parts = self._parts = rt._hot or rt.hot_parts()
        try:
            # The arm's assignment is counted at the end, with the result (off the request path when deferred).
            self.variant, version, test = parts[2]._assign(self.model_type, self.user_id, False)
            self.test = test
            version = self.version = version or self.default_version
        except Exception as exc:  # assignment never raises, but a broken runtime must not fail the request
            parts[0].fault("prediction.assign", exc)
            test = None
            version = self.version = self.default_version
        opened = self._opened = _open_stage(parts[0], self.stage, version, self.model_type, self.attributes)
        self._start = _perf_counter()
        # (The API's no-op span answers is_recording() with a constant False: skip that call for it.)
        if test is not None and opened is not None and type(span := opened[0]) is not _NonRecordingSpan \
                and span.is_recording():
            span.set_attribute(semconv.SPAN_ATTR_AB_TEST, test)
            span.set_attribute(semconv.SPAN_ATTR_AB_VARIANT, self.variant)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        opened = self._opened
        if opened is _NOT_ENTERED or opened is _EXITED:
            return
        self._opened = _EXITED
        parts = self._parts
        tel = parts[0]
        version = self.version
        score = self.anomaly_score
        conf = self.confidence
        latency = observed_latency = self.inference_time_ms
        if opened is None and exc_type is None and version is not None and type(score) is float \
                and type(conf) is float and self.features is None and self.embedding is None \
                and not self.extra and not self.attributes and self._defer(version, latency, score, conf):
            return
        if self.test is not None:  # the assignment __enter__ left uncounted
            try:
                parts[2]._count_assignments(self.test, self.variant)
            except Exception as fault:
                tel.fault("prediction.assign", fault)
        observed = version is not None and score is not None and conf is not None
        if exc_type is not None:
            self.error_type = exc_type.__name__
        model_type = self.model_type
        handle = writes = None
        if observed:  # the fused telemetry writes of (stage, version), when they cover these outputs
            handle = self._lookup(version)  # type: ignore[arg-type]  # observed: version not None
            if handle is not None:
                writes = handle.writes
                if writes is None or writes.stage != self.stage:  # one stage per handle is kept: the usual case
                    writes = self._writes(handle, tel)
                if writes is not None and not writes.covers(latency, score, conf):  # type: ignore[arg-type]
                    writes = None
        if writes is not None:  # the stage ends below, after the registry and A/B sums, in one lock round
            elapsed = _perf_counter() - self._start
        elif observed:  # the stage duration and the seed metrics, on the stage's span, which then ends
            elapsed = _close_stage(tel, self.stage, self._start, opened, exc_type, exc,
                                   (version, latency, score, conf))  # type: ignore[arg-type]
        else:
            if version is not None:
                tel.set_request_model_version(version)
            elapsed = _close_stage(tel, self.stage, self._start, opened, exc_type, exc, None)
        if version is None:
            tel.invalid("prediction.model_version", None)  # no test, champion or default: nothing to attribute
            return
        if exc_type is None:
            error = False
            if latency is None:
                latency = elapsed * 1000.0
            ok_conf = conf
            # Validated once here for both the registry and the A/B test (each would re-check the same
            # numbers): only values check_result() accepts unchanged take the fast paths; anything else
            # (ints, numpy numbers, NaN, out of range) goes through the public methods, which count it.
            checked = (type(latency) is float and 0.0 <= latency <= MAX_LATENCY_MS
                       and (conf is None or (type(conf) is float and 0.0 <= conf <= 1.0)))
        else:  # an error carries no latency or confidence (as 0.1's error path)
            error = checked = True
            latency = ok_conf = None
        if not observed:
            handle = self._lookup(version)
        # Each part on its own: a fault in one never keeps the others from recording.
        fast = handle if checked else None  # the validated-input paths apply
        try:
            if fast is not None and fast.stats_key is not None:
                fast.update(fast.stats_key, latency, ok_conf, error)
            else:
                parts[1].update_metrics(model_type, version, latency, ok_conf, error=error)
        except Exception as fault:  # the caller's request must never fail because of us
            tel.fault("prediction.registry", fault)
        test = self.test
        ab_result = None
        if test is not None:
            extra = self.extra
            attributes = self.attributes
            try:
                if fast is not None and not extra and not attributes:
                    # With fused writes the result is counted in their lock round, not by the manager.
                    if fast.record(test, self.variant, latency, ok_conf, error, writes is None) \
                            and writes is not None:
                        ab_result = (test, self.variant)
                else:
                    # Custom metrics (#12) and the attributes the test's segment report breaks down by.
                    parts[2].record_result(test, self.variant, latency, ok_conf, error=error, metrics=extra or None,
                                     attributes=attributes or None)
            except Exception as fault:
                tel.fault("prediction.ab", fault)
        if writes is not None:
            writes.close(elapsed, opened, exc_type, exc, observed_latency, score, conf, ab_result)  # type: ignore[arg-type]
        if observed:
            try:
                add = None if handle is None else handle.add_sample
                if add is None:
                    detector = parts[3].get_detector(model_type, version)
                    add = detector.add_production_sample
                    if handle is not None:
                        handle.add_samples = detector.add_production_samples
                        handle.add_sample = add
                features, embedding = self.features, self.embedding
                if features is None and embedding is None:
                    add(score, conf)  # type: ignore[arg-type]  # observed: score and conf not None
                else:
                    add(score, conf, features=features, embedding=embedding)  # type: ignore[arg-type]
            except Exception as fault:
                tel.fault("prediction.drift", fault)

    def _defer(self, version: str, latency: float | None, score: float, conf: float) -> bool:
        """The common case's exit: queue the records off the request path (see ``Telemetry.deferred``).

        Taken when nothing on the request needs them synchronously: no span (no exemplar, no span
        attributes), a successful block with observed outputs every validated fast path accepts, and
        a handle whose registry key, drift detector and fused writes of this stage exist (the first
        prediction of a version makes them on the immediate path). Only the request's model version
        is set now. Returns whether the records were queued; False leaves everything to the caller.
        """
        try:
            handle = self.runtime._prediction_handles[(self.model_type, version)]
        except Exception:  # not made yet, or an unhashable version: the immediate path
            return False
        writes = handle.writes
        if writes is None or handle.add_samples is None or handle.stats_key is None \
                or (writes.stage is not self.stage and writes.stage != self.stage) \
                or not writes.defers(latency, score, conf):  # (__exit__ checked that score and conf are floats)
            return False
        elapsed = _perf_counter() - self._start
        if latency is None:
            latency = elapsed * 1000.0
        if not 0.0 <= latency <= MAX_LATENCY_MS:  # (defers() checked its type)
            return False
        writes.mark_request()
        pending = self.runtime._pending_predictions
        pending.items.append((handle, writes, self.test, self.variant, elapsed, latency, score, conf))
        if not pending.scheduled:
            pending.scheduled = True
            writes.telemetry.deferred.defer(_apply_pending, pending)
        return True

    def _lookup(self, version: str) -> _Handle | None:
        """The cached :class:`_Handle` of (model_type, *version*); ``None`` for an unhashable version
        (the public methods then count or report it)."""
        try:
            return self.runtime._prediction_handles[(self.model_type, version)]
        except KeyError:
            return self._handle(version)
        except Exception:
            return None

    def _writes(self, handle: _Handle, tel: Telemetry) -> PredictionWrites | None:
        """New fused telemetry writes of the handle's version in this prediction's stage, kept on the handle."""
        try:
            writes = handle.writes = PredictionWrites(tel, self.stage, handle.version)
        except Exception as fault:
            tel.fault("prediction.telemetry", fault)
            return None
        return writes

    def _handle(self, version: str) -> _Handle:
        """The cached :class:`_Handle` of (model_type, *version*), made on the first prediction of it."""
        _, registry, ab, _ = self._parts
        handle = _Handle(version, registry, ab)
        with contextlib.suppress(Exception):  # an invalid name: update_metrics() counts it, every time
            handle.stats_key = registry._stats_key(self.model_type, version)
        self.runtime._prediction_handles[(self.model_type, version)] = handle
        return handle

    async def __aenter__(self) -> Prediction:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # --------------------------------------------------------------- decorator
    def __call__(self, func: F) -> F:
        """Decorate a sync or async function: each call runs inside a new prediction.

        The user id is the call's ``user_id`` argument when the function has one
        (else the one given here); a parameter named ``prediction`` receives the
        open :class:`Prediction` (it is also :func:`current_prediction`).
        """
        rt, model_type, default_user = self.runtime, self.model_type, self.user_id
        options = {"stage": self.stage, "default_version": self.default_version, "attributes": self.attributes}
        sig = inspect.signature(func)
        inject = "prediction" in sig.parameters
        has_user = "user_id" in sig.parameters

        def open_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Prediction:
            user = default_user
            if has_user:
                with contextlib.suppress(TypeError):  # a wrong call: let func raise the real error
                    user = sig.bind_partial(*args, **kwargs).arguments.get("user_id", default_user)
            return Prediction(rt, model_type, user, stage=cast("str", options["stage"]),
                              default_version=cast("str | None", options["default_version"]),
                              attributes=cast("Mapping[str, Any] | None", options["attributes"]))

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                p = open_for(args, kwargs)
                token = _CURRENT.set(p)
                try:
                    async with p:
                        if inject:
                            kwargs["prediction"] = p
                        return await func(*args, **kwargs)
                finally:
                    _CURRENT.reset(token)

            return cast("F", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            p = open_for(args, kwargs)
            token = _CURRENT.set(p)
            try:
                with p:
                    if inject:
                        kwargs["prediction"] = p
                    return func(*args, **kwargs)
            finally:
                _CURRENT.reset(token)

        return cast("F", wrapper)


def _apply_pending(pending: _Pending) -> None:
    """Apply every record of *pending* (a ``Telemetry.deferred`` write): what :meth:`Prediction.__exit__`
    records for a successful observed prediction with no span, later and in a batch.

    Per model version, in the order queued: the registry's running metrics, the A/B results, the fused
    telemetry writes (no exemplar, no request context) and the drift samples, each on its own as on the
    immediate path. From :data:`_MANY` records of a version on, each part takes them all at once (summed,
    one lock round each); fewer go one by one.
    """
    pending.scheduled = False  # before taking the records: one appended from now on schedules a new write
    popleft = pending.items.popleft
    by_handle: dict[int, list[_Record]] = {}
    while True:
        try:
            record = popleft()
        except IndexError:
            break
        by_handle.setdefault(id(record[0]), []).append(record)
    for records in by_handle.values():
        if len(records) < _MANY:
            for record in records:
                _apply_one(*record)
        else:
            _apply_many(records)


def _apply_one(handle: _Handle, writes: PredictionWrites, test: str | None, variant: str, elapsed: float,
               latency: float, score: float, conf: float) -> None:
    tel = writes.telemetry
    try:
        handle.update(handle.stats_key, latency, conf, False)  # type: ignore[arg-type]  # checked by _defer
    except Exception as fault:
        tel.fault("prediction.registry", fault)
    ab_result = None
    if test is not None:
        try:
            handle.count_assignments(test, variant, 1)
        except Exception as fault:
            tel.fault("prediction.assign", fault)
        try:
            if handle.record(test, variant, latency, conf, False, False):
                ab_result = (test, variant)
        except Exception as fault:
            tel.fault("prediction.ab", fault)
    writes.record(elapsed, latency, score, conf, ab_result)
    try:
        handle.add_sample(score, conf)  # type: ignore[misc]  # bound: checked by _defer
    except Exception as fault:
        tel.fault("prediction.drift", fault)


def _apply_many(records: list[_Record]) -> None:
    handle, writes = records[0][0], records[0][1]
    tel = writes.telemetry
    latencies = [r[5] for r in records]
    confs = [r[7] for r in records]
    try:
        handle.update_many(handle.stats_key, latencies, confs)  # type: ignore[arg-type]  # checked by _defer
    except Exception as fault:
        tel.fault("prediction.registry", fault)
    arms: dict[tuple[str, str], list[_Record]] = {}
    first = records[0]
    if all(r[2] == first[2] and r[3] == first[3] for r in records):  # the usual batch: one arm (or none)
        if first[2] is not None:
            arms[(first[2], first[3])] = records
    else:
        for r in records:
            if r[2] is not None:
                arms.setdefault((r[2], r[3]), []).append(r)
    counts: list[tuple[tuple[str, str], int]] = []
    for arm, rs in arms.items():
        try:
            handle.count_assignments(arm[0], arm[1], len(rs))
        except Exception as fault:
            tel.fault("prediction.assign", fault)
        try:
            if handle.record_many(arm[0], arm[1], [r[5] for r in rs], [r[7] for r in rs]):
                counts.append((arm, len(rs)))
        except Exception as fault:
            tel.fault("prediction.ab", fault)
    scores = [r[6] for r in records]
    writes.record_many([r[4] for r in records], latencies, scores, confs, counts)
    try:
        handle.add_samples(scores, confs)  # type: ignore[misc]  # bound with add_sample: checked by _defer
    except Exception as fault:
        tel.fault("prediction.drift", fault)


class ShadowedPrediction(Prediction):
    """A :class:`Prediction` whose champion answer also goes to a shadow challenger (#14).

    On a successful exit of a request the champion served (not an A/B
    treatment), the observed ``anomaly_score``, ``confidence`` and numeric
    extras, with the latency, are handed to ``shadow.submit`` (non-blocking,
    never raises). See :mod:`mlops_otel.shadow`.
    """

    __slots__ = ("_shadow_start", "shadow")

    def __init__(self, *args: Any, shadow: ShadowCall, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shadow: ShadowCall | None = shadow
        self._shadow_start = 0.0

    def __enter__(self) -> Prediction:
        entered = super().__enter__()
        self._shadow_start = time.perf_counter()
        return entered

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed_ms = (time.perf_counter() - self._shadow_start) * 1000.0
        super().__exit__(exc_type, exc, tb)
        call, self.shadow = self.shadow, None  # once, however often __exit__ is called
        score = self.anomaly_score
        if call is None or exc_type is not None or self.variant == "treatment" or score is None:
            return
        try:
            outputs: dict[str, float] = {"anomaly_score": float(score)}
            if self.confidence is not None:
                outputs["confidence"] = float(self.confidence)
            outputs.update({k: float(v) for k, v in self.extra.items() if isinstance(v, (int, float))})
            latency = self.inference_time_ms if self.inference_time_ms is not None else elapsed_ms
            call.submit(outputs, champion_latency_ms=latency)
        except Exception as exc:  # the caller's request must never fail because of the shadow
            self.runtime.telemetry.fault("prediction.shadow", exc)

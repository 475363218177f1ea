"""The :class:`Telemetry` owner: recording, spans and export for one process."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
import numbers
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from contextvars import Token
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import attrs
from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import CollectorRegistry

from .. import semconv
from .._forksafe import after_fork_in_child
from .._version import __version__
from ..semconv import MetricKind, MetricSpec
from ..validation import InvalidValueError
from ._aggregate import Aggregator, FamilySnapshot, _Family
from ._deferred import Deferred
from ._genai import (
    GenAIOperation,
    GenAIRetrieval,
    GenAIShape,
    TokenPrices,
    gen_ai_shape_from_env,
    record_gen_ai_metrics,
)
from ._otlp import MetricsExporter, PeriodicPusher, to_metrics_data
from ._prometheus import make_registry, render

__all__ = ["NO_SDK_RECHECK_S", "Mode", "Telemetry", "tracer_cannot_record"]

Mode = Literal["aggregate", "passthrough"]
F = TypeVar("F", bound=Callable[..., Any])

SCOPE_NAME = "mlops_otel"
#: The instrumentation scope version is the package version (from its metadata).
_VERSION = __version__

_MS = 0.001
_MAX_FLOAT = 1.7976931348623157e308


def _num(value: object) -> float:
    """*value* as a float for the range checks, NaN (always rejected) when it is not a real number.

    One field's bad value (``None``, a string) must not drop the valid fields of the same call.
    """
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]  # the exact type was just checked
    if kind is int:  # before the slower ABC check below; float() of a huge int overflows
        try:
            return float(value)  # type: ignore[arg-type]  # the exact type was just checked
        except OverflowError:
            return math.nan
    if isinstance(value, float):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return float(value)
        except (OverflowError, TypeError, ValueError):
            return math.nan
    return math.nan


_INSTANCE_ID = "service.instance.id"


def _with_instance_id(resource: Resource) -> Resource:
    """*resource* with a fresh random ``service.instance.id``."""
    return resource.merge(Resource({_INSTANCE_ID: uuid.uuid4().hex}))


class _RequestState:
    """Mutable per-request state carried in a context variable."""

    __slots__ = ("model_version", "no_sdk")

    def __init__(self) -> None:
        self.model_version = semconv.UNKNOWN_LABEL_VALUE
        #: Whether the global tracer provider was the API's own (no SDK) when the request first asked.
        self.no_sdk: bool | None = None


# The model version that served the current request, set by record_gnn_metrics inside
# a @track_diagnosis_request call. A ContextVar is per task/thread, not shared state.
_REQUEST: contextvars.ContextVar[_RequestState | None] = contextvars.ContextVar(
    "mlops_otel_request", default=None
)
# The recording span of the innermost track_stage / track_diagnosis_request, if any: the
# seed helpers attach their attributes to it. One ContextVar read is several times cheaper
# than the OTel context API's get_current_span() on the hot path.
_STAGE_SPAN: contextvars.ContextVar[Span | None] = contextvars.ContextVar("mlops_otel_stage_span", default=None)

# The global providers under which a ProxyTracer starts nothing but non-recording spans.
_NO_SDK_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_get_tracer_provider = trace.get_tracer_provider
_perf_counter = time.perf_counter


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidValueError(name, f"one of {choices}", value)


def _check_positive(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
        raise InvalidValueError(name, "a positive finite number", value)


@attrs.define(eq=False)
class Telemetry:
    """Records the mlops-otel metric families and spans for one process.

    Measurements are aggregated in process (``mode="aggregate"``, the
    default, about 10x cheaper than an OTel SDK instrument call) and exported
    from one snapshot both as a Prometheus exposition (:meth:`metrics_app`)
    and, when *exporter* is given, as OTLP pushed every *export_interval*
    seconds. With ``mode="passthrough"`` every measurement is *also* sent to
    instruments of *meter_provider* (the global one when ``None``), for users
    who want their own Views, readers and exemplars.

    Spans go through *tracer_provider* (the global one when ``None``).
    Nothing here raises into the caller: invalid values and internal faults are
    counted and logged once.
    """

    meter_provider: otel_metrics.MeterProvider | None = attrs.field(default=None, kw_only=True)
    tracer_provider: trace.TracerProvider | None = attrs.field(default=None, kw_only=True)
    mode: Mode = attrs.field(default="aggregate", kw_only=True)
    max_label_values: int = attrs.field(default=100, kw_only=True)
    resource: Resource | None = attrs.field(default=None, kw_only=True)
    exporter: MetricsExporter | None = attrs.field(default=None, kw_only=True)
    export_interval: float = attrs.field(default=60.0, kw_only=True)
    export_timeout: float = attrs.field(default=10.0, kw_only=True)
    #: GenAI conventions shape; ``None``: from ``OTEL_SEMCONV_STABILITY_OPT_IN`` when created.
    gen_ai_shape: GenAIShape | None = attrs.field(default=None, kw_only=True)
    #: Token prices for ``mlops_gen_ai_token_cost_total``; ``None``: the file ``MLOPS_OTEL_GEN_AI_PRICES`` names.
    gen_ai_prices: TokenPrices | None = attrs.field(default=None, kw_only=True)

    _agg: Aggregator = attrs.field(init=False, repr=False)
    _tracer: trace.Tracer = attrs.field(init=False, repr=False)
    _registry: CollectorRegistry = attrs.field(init=False, repr=False)
    _pusher: PeriodicPusher | None = attrs.field(init=False, repr=False, default=None)
    _instruments: dict[str, Any] = attrs.field(init=False, repr=False, factory=dict)
    _scope: InstrumentationScope = attrs.field(init=False, repr=False)
    _closed: bool = attrs.field(init=False, repr=False, default=False)
    _exposition: Callable[[], list[FamilySnapshot]] | None = attrs.field(init=False, repr=False, default=None)
    _auto_instance_id: bool = attrs.field(init=False, repr=False, default=False)
    # The seed helpers' families, resolved once (Aggregator.reset clears them in place).
    _gnn_fams: tuple[_Family, _Family, _Family] = attrs.field(init=False, repr=False)
    _rag_fams: tuple[_Family, _Family] = attrs.field(init=False, repr=False)
    _request_fams: tuple[_Family, _Family] = attrs.field(init=False, repr=False)
    #: Writes the integration paths deferred off the request path (see :class:`Deferred`);
    #: :meth:`snapshot` and the cores' reads apply them first (:meth:`apply_pending`).
    deferred: Deferred = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_choice("mode", self.mode, ("aggregate", "passthrough"))
        _check_positive("export_interval", self.export_interval)
        _check_positive("export_timeout", self.export_timeout)
        self._agg = Aggregator(max_label_values=self.max_label_values)
        self.deferred = Deferred(self._agg.fault)
        if self.gen_ai_shape is None:
            self.gen_ai_shape = gen_ai_shape_from_env(os.environ)  # read now, never at import
        _check_choice("gen_ai_shape", self.gen_ai_shape, ("v1.41.0", "latest_experimental"))
        if self.gen_ai_prices is None:
            self.gen_ai_prices = TokenPrices.from_env(os.environ)
        fams = self._agg.families
        self._gnn_fams = (fams[semconv.GNN_INFERENCE_DURATION.name], fams[semconv.GNN_ANOMALY_SCORE.name],
                          fams[semconv.GNN_CONFIDENCE.name])
        self._rag_fams = (fams[semconv.RAG_GENERATION_DURATION.name], fams[semconv.RAG_TOKENS_USED.name])
        self._request_fams = (fams[semconv.DIAGNOSIS_REQUESTS.name], fams[semconv.DIAGNOSIS_DURATION.name])
        self._tracer = trace.get_tracer(SCOPE_NAME, _VERSION, tracer_provider=self.tracer_provider)
        self._registry = make_registry(self._exposition_snapshot)
        self._scope = InstrumentationScope(SCOPE_NAME, _VERSION)
        if self.resource is None:
            # Resource.create() reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES now, not at import.
            self.resource = Resource.create()
            if _INSTANCE_ID not in self.resource.attributes:
                # Each worker is its own instance, so pushed cumulative series never collide.
                self.resource = _with_instance_id(self.resource)
                self._auto_instance_id = True
        if self.mode == "passthrough":
            self._create_instruments()
        if self.exporter is not None:
            self._pusher = PeriodicPusher(
                self.exporter, self.metrics_data, interval=self.export_interval,
                timeout=self.export_timeout, on_error=self._agg.fault,
            )
            self._pusher.ensure_started()
        after_fork_in_child(self, Telemetry._after_fork)

    def _after_fork(self) -> None:
        # The child starts from zero: the parent's counts are the parent's to export,
        # and it is a new instance of the service.
        self._agg.reset()
        if self._auto_instance_id and self.resource is not None:
            self.resource = _with_instance_id(self.resource)
        if self._pusher is not None:
            self._pusher.after_fork()
            if not self._closed:
                self._pusher.ensure_started()

    def _create_instruments(self) -> None:
        meter = otel_metrics.get_meter(SCOPE_NAME, _VERSION, meter_provider=self.meter_provider)
        for spec in semconv.ALL_METRICS:
            instrument: Any
            if spec.kind is MetricKind.COUNTER:
                instrument = meter.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind is MetricKind.GAUGE:
                instrument = meter.create_gauge(spec.name, spec.unit, spec.description)
            else:
                instrument = meter.create_histogram(
                    spec.name, spec.unit, spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.buckets),
                )
            self._instruments[spec.name] = instrument

    def _forward(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        try:
            instrument = self._instruments[spec.name]
            # An empty value is an unset attribute (error.type on a successful GenAI operation).
            attributes = {k: v for k, v in zip(spec.labels, labels, strict=True) if v != ""}
            if spec.kind is MetricKind.COUNTER:
                instrument.add(value, attributes)
            elif spec.kind is MetricKind.GAUGE:
                instrument.set(value, attributes)
            else:
                instrument.record(value, attributes)
        except Exception as exc:
            self._agg.fault("passthrough", exc)

    # ------------------------------------------------------------ generic API
    @property
    def tracer(self) -> trace.Tracer:
        """The tracer every mlops-otel span is started from."""
        return self._tracer

    def span_may_record(self) -> bool:
        """Whether a span started now by :attr:`tracer` could record (see ``track_stage``: none is started
        while it cannot). Public API types only; checked per request (per call outside one, a "no SDK"
        answer kept :data:`NO_SDK_RECHECK_S`), so a provider installed later counts from the first
        request starting that long after it."""
        return not _cannot_record(self)

    def add(self, spec: MetricSpec, labels: tuple[str, ...], value: float = 1.0) -> None:
        """Add *value* to the counter *spec* for *labels* (ordered as ``spec.labels``)."""
        try:
            self._agg.add(self._agg.families[spec.name], labels, value)
        except Exception as exc:
            self._agg.fault("add", exc)
            return
        if self._instruments:
            self._forward(spec, labels, value)

    def add_each(self, spec: MetricSpec, labels: tuple[str, ...], n: int) -> None:
        """What *n* calls of ``add(spec, labels)`` record, in one lock round (*n* >= 0 whole additions of 1)."""
        try:
            self._agg.add_each(self._agg.families[spec.name], labels, n)
        except Exception as exc:
            self._agg.fault("add", exc)
            return
        if self._instruments:
            for _ in range(n):
                self._forward(spec, labels, 1.0)

    def record(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        """Record *value* in the histogram *spec* for *labels*."""
        self._record(spec, labels, value, _STAGE_SPAN.get())

    def _record(self, spec: MetricSpec, labels: tuple[str, ...], value: float, span: Span | None) -> None:
        """:meth:`record` with *span* (the exemplar's, or ``None``) given: a deferred write must not read
        the context of whichever thread applies it."""
        try:
            self._agg.record(self._agg.families[spec.name], labels, value, span)
        except Exception as exc:
            self._agg.fault("record", exc)
            return
        if self._instruments:
            self._forward(spec, labels, value)

    def set(self, spec: MetricSpec, labels: tuple[str, ...], value: float) -> None:
        """Set the gauge *spec* for *labels* to *value*."""
        try:
            self._agg.set(self._agg.families[spec.name], labels, value)
        except Exception as exc:
            self._agg.fault("set", exc)
            return
        if self._instruments:
            self._forward(spec, labels, value)

    def invalid(self, metric: str, value: object) -> None:
        """Count (and log once) a rejected measurement of *metric* from a caller's hot path."""
        self._agg.invalid(metric, value)

    def fault(self, reason: str, exc: BaseException) -> None:
        """Count (and log once) an internal fault that was swallowed."""
        self._agg.fault(reason, exc)

    # -------------------------------------------------------- seed recording API
    def record_gnn_metrics(
        self, model_version: str, inference_time_ms: float, anomaly_score: float, confidence: float
    ) -> None:
        """Record one GNN inference: latency, anomaly score and confidence."""
        agg = self._agg
        try:
            labels = (model_version,)
            duration, score, conf = self._gnn_fams
            span = _STAGE_SPAN.get()  # the sampled span, if any, becomes the buckets' exemplar
            if (type(inference_time_ms) is float and type(anomaly_score) is float and type(confidence) is float
                    and 0.0 <= inference_time_ms <= _MAX_FLOAT and 0.0 <= anomaly_score <= 1.0
                    and 0.0 <= confidence <= 1.0):
                seconds = inference_time_ms * _MS
                with agg.lock:  # one lock round for the three histograms
                    agg.observe(duration, labels, seconds, span)
                    agg.observe(score, labels, anomaly_score, span)
                    agg.observe(conf, labels, confidence, span)
            else:  # at least one is invalid: record each on its own, counting the rejects per field
                seconds = _num(inference_time_ms) * _MS
                anomaly_score = _num(anomaly_score)
                confidence = _num(confidence)
                agg.record(duration, labels, seconds, span)
                agg.record(score, labels, anomaly_score, span)
                agg.record(conf, labels, confidence, span)
            state = _REQUEST.get()
            if state is not None:
                state.model_version = model_version
            if span is not None:
                span.set_attributes({
                    semconv.SPAN_ATTR_MODEL_VERSION: model_version,
                    semconv.SPAN_ATTR_ANOMALY_SCORE: anomaly_score,
                    semconv.SPAN_ATTR_CONFIDENCE: confidence,
                })
        except Exception as exc:
            agg.fault("record_gnn_metrics", exc)
            return
        if self._instruments:
            if 0.0 <= seconds <= _MAX_FLOAT:
                self._forward(semconv.GNN_INFERENCE_DURATION, labels, seconds)
            if 0.0 <= anomaly_score <= 1.0:
                self._forward(semconv.GNN_ANOMALY_SCORE, labels, anomaly_score)
            if 0.0 <= confidence <= 1.0:
                self._forward(semconv.GNN_CONFIDENCE, labels, confidence)

    def record_rag_metrics(
        self,
        model_version: str,
        generation_time_ms: float,
        tokens_used: float,
        *,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """Record one RAG generation: latency and tokens used."""
        agg = self._agg
        try:
            labels = (model_version,)
            seconds = _num(generation_time_ms) * _MS
            tokens_used = _num(tokens_used)
            duration, tokens = self._rag_fams
            span = _STAGE_SPAN.get()
            if 0.0 <= seconds <= _MAX_FLOAT and 0.0 <= tokens_used <= _MAX_FLOAT:
                with agg.lock:
                    agg.observe(duration, labels, seconds, span)
                    agg.observe(tokens, labels, tokens_used, span)
            else:
                agg.record(duration, labels, seconds, span)
                agg.record(tokens, labels, tokens_used, span)
            if span is not None:
                attributes: dict[str, str | int] = {semconv.ATTR_GEN_AI_REQUEST_MODEL: model_version}
                if input_tokens is not None:
                    attributes[semconv.ATTR_GEN_AI_INPUT_TOKENS] = input_tokens
                if output_tokens is not None:
                    attributes[semconv.ATTR_GEN_AI_OUTPUT_TOKENS] = output_tokens
                span.set_attributes(attributes)
        except Exception as exc:
            agg.fault("record_rag_metrics", exc)
            return
        if self._instruments:
            if 0.0 <= seconds <= _MAX_FLOAT:
                self._forward(semconv.RAG_GENERATION_DURATION, labels, seconds)
            if 0.0 <= tokens_used <= _MAX_FLOAT:
                self._forward(semconv.RAG_TOKENS_USED, labels, tokens_used)

    # ------------------------------------------------------- GenAI conventions
    def gen_ai_operation(
        self, model: str, *, provider: str, operation: str = semconv.GEN_AI_OPERATION_CHAT, remote: bool = False
    ) -> GenAIOperation:
        """Trace and measure one GenAI inference call as the OTel GenAI conventions describe.

        A span ``{operation} {model}`` (kind CLIENT when *remote*, INTERNAL for an
        in-process model) and, on exit, ``gen_ai.client.operation.duration`` (with
        ``error.type`` on failure) and the token metrics of :meth:`GenAIOperation.record_usage`,
        in the shape :attr:`gen_ai_shape` selects. Use it inside the seed's RAG stage; the
        seed's ``rag_*`` names are recorded as before by :meth:`record_rag_metrics`.
        """
        return GenAIOperation(self, model, provider=provider, operation=operation, remote=remote)

    def gen_ai_retrieval(self, data_source_id: str, *, provider: str | None = None,
                         remote: bool = False) -> GenAIRetrieval:
        """A retrieval span ``retrieval {data_source_id}`` around a document lookup."""
        return GenAIRetrieval(self, data_source_id, provider=provider, remote=remote)

    def record_gen_ai(
        self, op: GenAIOperation, elapsed: float, error_type: str, input_tokens: int | None,
        output_tokens: int | None, span: Span | None,
    ) -> None:
        """Record the metrics of a finished :class:`GenAIOperation` (called by it on exit)."""
        assert self.gen_ai_shape is not None  # set in __attrs_post_init__
        try:
            record_gen_ai_metrics(self, self.gen_ai_shape, self.gen_ai_prices, op, elapsed, error_type,
                                  input_tokens, output_tokens, span)
        except Exception as exc:
            self._agg.fault("record_gen_ai", exc)

    @staticmethod
    def set_request_model_version(model_version: str) -> None:
        """Label the current ``@track_diagnosis_request`` call with *model_version* (no-op outside one).

        :meth:`record_gnn_metrics` does it too; a failed prediction that recorded no
        outputs uses this, so its request is still counted under the version that served it.
        """
        state = _REQUEST.get()
        if state is not None:
            state.model_version = model_version

    def record_error(self, error_type: str, stage: str) -> None:
        """Count one error of *error_type* raised in *stage*."""
        self.add(semconv.DIAGNOSIS_ERRORS, (error_type, stage))

    def set_drift_score(self, model_type: str, model_version: str, score: float) -> None:
        """Set ``model_drift_score{model_type,model_version}`` (0..1)."""
        self.set(semconv.MODEL_DRIFT_SCORE, (model_type, model_version), score)

    def record_request(self, status: str, model_version: str, duration_s: float, stage: str) -> None:
        """Count one request and record its duration under ``diagnosis_duration_seconds{stage}``."""
        self._record_request(status, model_version, duration_s, stage, _STAGE_SPAN.get())

    def _record_request(self, status: str, model_version: str, duration_s: float, stage: str,
                        span: Span | None) -> None:
        """:meth:`record_request` with *span* (the exemplar's, or ``None``) given: a deferred write must not
        read the context of whichever thread applies it."""
        agg = self._agg
        try:
            requests, duration = self._request_fams
            if (type(duration_s) is float and duration.lo <= duration_s <= duration.hi
                    and requests.lo <= 1.0 <= requests.hi):
                with agg.lock:  # the common valid case: one lock round for the counter and the histogram
                    agg.increment(requests, (status, model_version), 1.0)
                    agg.observe(duration, (stage,), duration_s, span)
            else:
                agg.add(requests, (status, model_version), 1.0)
                agg.record(duration, (stage,), duration_s, span)
        except Exception as exc:
            agg.fault("record_request", exc)
            return
        if self._instruments:
            self._forward(semconv.DIAGNOSIS_REQUESTS, (status, model_version), 1.0)
            self._forward(semconv.DIAGNOSIS_DURATION, (stage,), duration_s)

    def track_stage(
        self, stage: str, model_version: str | None = None, *, model_type: str | None = None
    ) -> StageTracker:
        """Time a stage, open its span and count its errors (``with`` or ``async with``)."""
        return StageTracker(self, stage, model_version, model_type)

    def request_scope(self, name: str) -> AbstractContextManager[None]:
        """What :meth:`track_diagnosis_request` does around one call, as a context manager."""
        return _RequestScope(self, name)

    def track_diagnosis_request(self, name: str) -> Callable[[F], F]:
        """Decorate a (sync or async) request handler: count it, time it, trace it."""
        return request_decorator(name, lambda: _RequestScope(self, name))

    # ------------------------------------------------------------------ export
    def snapshot(self) -> list[FamilySnapshot]:
        """Copy every recorded family (the one source of both exports), deferred writes applied first."""
        self.apply_pending()
        return self._agg.snapshot()

    def apply_pending(self) -> None:
        """Apply every write deferred off the request path now (reads and decisions call it first)."""
        self.deferred.apply()

    def use_exposition_source(self, source: Callable[[], list[FamilySnapshot]] | None) -> None:
        """Serve *source*'s families on ``/metrics`` instead of this process's own.

        Used to expose the merged view of every worker (see
        :class:`mlops_otel.FleetMetrics`); ``None`` restores the local snapshot.
        OTLP always pushes this process's own data, tagged with its instance id.
        """
        self._exposition = source

    def _exposition_snapshot(self) -> list[FamilySnapshot]:
        source = self._exposition
        if source is None:
            return self.snapshot()
        try:
            return source()
        except Exception as exc:  # a scrape must still answer with this worker's data
            self.fault("exposition_source", exc)
            return self.snapshot()

    def metrics_data(self) -> MetricsData:
        """The current snapshot in the OTel SDK data model (what OTLP sends)."""
        assert self.resource is not None  # set in __attrs_post_init__
        return to_metrics_data(self.snapshot(), self.resource, self._scope)

    @property
    def prometheus_registry(self) -> CollectorRegistry:
        """A private prometheus_client registry serving this instance's metrics."""
        return self._registry

    def render_prometheus(self) -> bytes:
        """The current Prometheus text exposition."""
        return render(self._registry)

    def metrics_app(self) -> Callable[..., Awaitable[None]]:
        """An ASGI app serving the Prometheus exposition; mount it at ``/metrics``.

        prometheus_client's ASGI app renders synchronously (3 ms at 10 model versions, 33 ms at
        100), which would stop every request of the worker for that long; the render runs in a
        worker thread instead, so the event loop gets the GIL back every switch interval (#16).
        """
        from prometheus_client import make_asgi_app

        inner = cast("Callable[..., Coroutine[Any, Any, None]]", make_asgi_app(registry=self._registry))

        async def app(scope: Any, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]],
                      ) -> None:
            request = await receive()
            messages: list[Any] = []

            async def replay() -> Any:
                return request

            async def collect(message: Any) -> None:
                messages.append(message)

            await asyncio.to_thread(asyncio.run, inner(scope, replay, collect))
            for message in messages:
                await send(message)

        return app

    def force_flush(self) -> bool:
        """Push one OTLP export now (when an exporter is configured)."""
        return True if self._pusher is None else self._pusher.push()

    def close(self) -> None:
        """Stop the export thread after a final push. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.deferred.close()  # before the final push, which must include them
        if self._pusher is not None:
            self._pusher.shutdown()


_Opened = tuple[Span, object | None, "Token[Span | None]"]


def request_decorator(name: str, scope: Callable[[], AbstractContextManager[None]]) -> Callable[[F], F]:
    """A decorator running each call of a sync or async handler inside ``scope()``.

    *name* is validated now; *scope* is called per call, so it may resolve a default lazily.
    """
    if not isinstance(name, str) or not name:
        raise InvalidValueError("name", "a non-empty string", name)

    def decorator(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with scope():
                    return await func(*args, **kwargs)

            return cast("F", async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with scope():
                return func(*args, **kwargs)

        return cast("F", wrapper)

    return decorator


class _NoSdkAnswer:
    """The last "no SDK installed" answer of the provider lookup, and until when it is trusted.

    While no provider is set, OTel's ``get_tracer_provider()`` reads the environment on every call
    (about 0.6 µs, as much as the rest of a prediction's entry): a "no SDK" answer is therefore
    kept for :data:`NO_SDK_RECHECK_S`. An installed provider is never cached (the lookup is then a
    module attribute read), and OTel lets a process set its provider only once, so the answer can
    only go stale in one direction: a provider installed meanwhile is used at most that long later.
    It mirrors OTel's own process-global provider, hence one per process.
    """

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = -1.0

    def no_sdk(self) -> bool:
        now = _perf_counter()
        if now < self.until:
            return True
        if type(_get_tracer_provider()) in _NO_SDK_PROVIDERS:
            self.until = now + NO_SDK_RECHECK_S
            return True
        return False


#: Seconds a "no SDK installed" answer of the tracer-provider lookup is kept (see :class:`_NoSdkAnswer`).
NO_SDK_RECHECK_S = 0.05
_NO_SDK = _NoSdkAnswer()


def _no_sdk_provider() -> bool:
    """Whether the global tracer provider is the API's own (no SDK installed).

    Inside a ``track_diagnosis_request`` call the answer is kept for the rest of the request (its
    stages, prediction and GenAI operations agree on it); outside one, and for a request's first
    question, a "no SDK" answer less than :data:`NO_SDK_RECHECK_S` old is reused (see
    :class:`_NoSdkAnswer`): a provider installed meanwhile is used from the next request that
    starts that long after it.
    """
    state = _REQUEST.get()
    if state is None:
        return _NO_SDK.no_sdk()
    known = state.no_sdk
    if known is None:
        known = state.no_sdk = _NO_SDK.no_sdk()
    return known


def tracer_cannot_record(tracer: trace.Tracer) -> bool:
    """Whether a span *tracer* started now could not record: it is the API's no-op tracer, or its proxy
    while no SDK (no global provider but the API's own) is installed.

    Public API types only; the provider is looked up at most once per request and, while none is
    installed, at most every :data:`NO_SDK_RECHECK_S` seconds (see :func:`_no_sdk_provider`), so a
    provider installed later is honoured from the next request that starts that long after it.

    >>> from opentelemetry import trace
    >>> tracer_cannot_record(trace.NoOpTracer())
    True
    """
    kind = type(tracer)
    return kind is trace.NoOpTracer or (kind is trace.ProxyTracer and _no_sdk_provider())


def _cannot_record(tel: Telemetry) -> bool:
    """Whether a span started now by *tel*'s tracer could not record, and skipping it changes nothing.

    :func:`tracer_cannot_record` of its tracer, while no recording stage span is current (opening a
    non-recording one would hide that span from the seed helpers).
    """
    return _STAGE_SPAN.get() is None and tracer_cannot_record(tel._tracer)


def _open_span(tracer: trace.Tracer, name: str, attributes: dict[str, str]) -> _Opened:
    """Start *name*, make it current, and make it the span the seed helpers annotate.

    Cheaper than ``start_as_current_span`` (no generator-based context manager), and
    a span with an invalid context (the API's no-op tracer) is not attached at all.
    A valid but unsampled span *is* attached, so children inherit the decision.
    """
    span = tracer.start_span(name, attributes=attributes)
    stage = _STAGE_SPAN.set(span if span.is_recording() else None)
    if not span.get_span_context().is_valid:
        return span, None, stage
    return span, otel_context.attach(trace.set_span_in_context(span)), stage


def _close_span(opened: _Opened, exc: BaseException | None) -> None:
    """Record *exc* (if any) on the span, end it and restore the previous context."""
    span, token, stage = opened
    _STAGE_SPAN.reset(stage)
    if exc is not None and span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    if token is not None:
        otel_context.detach(cast("Token[Context]", token))
    span.end()


class StageTracker:
    """Context manager returned by :meth:`Telemetry.track_stage` (sync and async)."""

    __slots__ = ("_opened", "_start", "attributes", "model_type", "model_version", "stage", "telemetry")

    def __init__(
        self, telemetry: Telemetry, stage: str, model_version: str | None, model_type: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.stage = stage
        self.model_version = model_version
        self.model_type = model_type
        #: More span attributes, set when the span starts (so samplers see them).
        self.attributes = attributes
        self._opened: _Opened | None = None
        self._start = 0.0

    def __enter__(self) -> Span:
        # No span while tracing cannot record one (the API's no-op tracer, or its proxy before an SDK
        # provider is installed): the INVALID_SPAN is returned, and the stage's metrics are recorded.
        self._opened = opened = StageTracker._open_traced(
            self.telemetry, self.stage, self.model_version, self.model_type, self.attributes)
        self._start = time.perf_counter()
        return trace.INVALID_SPAN if opened is None else opened[0]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        StageTracker._close(self.telemetry, self.stage, self._start, self._opened, exc_type, exc, None)

    def finish(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        gnn: tuple[str, float | None, float, float] | None = None,
    ) -> float:
        """End the stage (what ``__exit__`` does) and return its wall time in seconds.

        *gnn* ``(model_version, inference_time_ms, anomaly_score, confidence)`` is recorded with
        :meth:`Telemetry.record_gnn_metrics` while the stage's span is still current; a ``None``
        latency means the stage's wall time. Never raises.
        """
        return StageTracker._close(self.telemetry, self.stage, self._start, self._opened, exc_type, exc, gnn)

    # The stage's work without a StageTracker instance, for runtime.prediction() (whose Prediction
    # holds the opened span and start time itself instead of allocating a tracker per prediction).
    @staticmethod
    def _open(tel: Telemetry, stage: str, model_version: str | None, model_type: str | None,
              extra: Mapping[str, Any] | None) -> _Opened | None:
        """Start the stage's span (made current); ``None`` when that failed (the fault is counted)."""
        try:
            attributes = {semconv.SPAN_ATTR_STAGE: str(stage)}
            if model_version is not None:
                attributes[semconv.SPAN_ATTR_MODEL_VERSION] = str(model_version)
            if model_type is not None:
                attributes[semconv.SPAN_ATTR_MODEL_TYPE] = str(model_type)
            if extra:
                attributes.update(extra)
            return _open_span(tel.tracer, semconv.span_name_for_stage(stage), attributes)
        except Exception as exc:
            tel.fault("track_stage", exc)
            return None

    @staticmethod
    def _open_traced(tel: Telemetry, stage: str, model_version: str | None, model_type: str | None,
                     extra: Mapping[str, Any] | None) -> _Opened | None:
        """:meth:`_open`, except that no span is started while tracing cannot record one.

        That is when the tracer is the API's no-op one, or its proxy while no SDK (no global provider
        but the API's own) is installed: such a span would be non-recording, its context the
        parent's, and nothing would see it. Checked per request, or per call outside one (a provider
        installed later is honoured from the next request), and only when no recording stage span is
        current (opening a non-recording one hides it from the seed helpers inside the stage; skipping
        must not change what they annotate). ``None``, as when opening failed: :meth:`_close` then
        records the stage's metrics alone.
        """
        if _cannot_record(tel):
            return None
        return StageTracker._open(tel, stage, model_version, model_type, extra)

    @staticmethod
    def _close(tel: Telemetry, stage: str, start: float, opened: _Opened | None,
               exc_type: type[BaseException] | None, exc: BaseException | None,
               gnn: tuple[str, float | None, float, float] | None) -> float:
        """The body of :meth:`finish` for a stage opened with :meth:`_open` at *start*."""
        elapsed = time.perf_counter() - start
        if opened is None and gnn is None and exc_type is None and not tel._instruments \
                and _STAGE_SPAN.get() is None:
            # Nothing of the request's context is needed (no span, no exemplar, no request model version):
            # the duration is written off the request path (see Deferred).
            tel.deferred.defer(tel._record, semconv.DIAGNOSIS_DURATION, (stage,), elapsed, None)
            return elapsed
        tel.record(semconv.DIAGNOSIS_DURATION, (stage,), elapsed)
        if gnn is not None:
            version, latency_ms, score, conf = gnn
            tel.record_gnn_metrics(version, elapsed * 1000.0 if latency_ms is None else latency_ms, score, conf)
        if exc_type is not None:
            tel.record_error(exc_type.__name__, stage)
        if opened is not None:
            try:
                _close_span(opened, exc)
            except Exception as fault:
                tel.fault("track_stage", fault)
        return elapsed

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class _RequestScope:
    """The body of :meth:`Telemetry.track_diagnosis_request` around one call."""

    __slots__ = ("_opened", "_start", "_state", "_token", "name", "telemetry")

    def __init__(self, telemetry: Telemetry, name: str) -> None:
        self.telemetry = telemetry
        self.name = name
        self._opened: _Opened | None = None

    def __enter__(self) -> None:
        self._state = _RequestState()
        self._token = _REQUEST.set(self._state)
        tel = self.telemetry
        try:  # no span while tracing cannot record one (see _cannot_record)
            self._opened = None if _cannot_record(tel) else _open_span(
                tel.tracer, semconv.SPAN_DIAGNOSIS, {semconv.SPAN_ATTR_REQUEST_NAME: self.name}
            )
        except Exception as exc:
            self.telemetry.fault("track_diagnosis_request", exc)
            self._opened = None
        self._start = time.perf_counter()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        _REQUEST.reset(self._token)
        tel = self.telemetry
        if exc_type is None and self._opened is None and not tel._instruments and _STAGE_SPAN.get() is None:
            # No span and no exemplar: the request's count and duration are written off the request path.
            tel.deferred.defer(tel._record_request, semconv.STATUS_SUCCESS, self._state.model_version, elapsed,
                               self.name, None)
            return
        status = semconv.STATUS_SUCCESS if exc_type is None else semconv.STATUS_ERROR
        tel.record_request(status, self._state.model_version, elapsed, self.name)
        if exc_type is not None:
            tel.record_error(exc_type.__name__, self.name)
        if self._opened is not None:
            try:
                span = self._opened[0]
                if span.is_recording():
                    span.set_attribute(semconv.SPAN_ATTR_MODEL_VERSION, self._state.model_version)
                _close_span(self._opened, exc)
            except Exception as fault:
                tel.fault("track_diagnosis_request", fault)

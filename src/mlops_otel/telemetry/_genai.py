"""OpenTelemetry GenAI semantic conventions for the RAG stage: operation and retrieval spans, metrics.

Which shape is emitted is decided once, when the :class:`~mlops_otel.telemetry.Telemetry` is
created: semantic conventions v1.41.0 by default, the latest experimental GenAI shape when
``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental`` (the switch GenAI
instrumentations use). Optionally, token usage is priced from a user file into
``mlops_gen_ai_token_cost_total``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import attrs
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import semconv

if TYPE_CHECKING:
    from ._telemetry import Telemetry

__all__ = ["GenAIOperation", "GenAIRetrieval", "GenAIShape", "TokenPrices", "gen_ai_shape_from_env"]

GenAIShape = Literal["v1.41.0", "latest_experimental"]

#: Variable naming a JSON price file: ``{"<model>": {"input": USD per 1M tokens, "output": ...}}``.
ENV_GEN_AI_PRICES = "MLOPS_OTEL_GEN_AI_PRICES"


def gen_ai_shape_from_env(environ: Mapping[str, str]) -> GenAIShape:
    """The GenAI shape *environ* selects (``OTEL_SEMCONV_STABILITY_OPT_IN`` is a comma-separated list)."""
    values = {v.strip().lower() for v in environ.get(semconv.ENV_SEMCONV_STABILITY_OPT_IN, "").split(",")}
    return "latest_experimental" if semconv.GEN_AI_LATEST_EXPERIMENTAL in values else "v1.41.0"


@attrs.frozen
class TokenPrices:
    """USD per one million input and output tokens, per model (``gen_ai.request.model``)."""

    per_million: Mapping[str, tuple[float, float]]

    @classmethod
    def from_file(cls, path: str | Path) -> TokenPrices:
        """Read ``{"<model>": {"input": <USD per 1M>, "output": <USD per 1M>}}``."""
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(doc, dict):
            raise ValueError(f"price file {path} must be a JSON object of models, got {type(doc).__name__}")
        prices = {}
        for model, row in doc.items():
            try:
                pair = (float(row["input"]), float(row["output"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"price of {model!r} in {path} must be "
                                 f'{{"input": <number>, "output": <number>}}, got {row!r}') from exc
            if not all(0.0 <= p < math.inf for p in pair):
                raise ValueError(f"price of {model!r} in {path} must be finite and >= 0, got {row!r}")
            prices[str(model)] = pair
        return cls(prices)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TokenPrices | None:
        """The prices of the file ``MLOPS_OTEL_GEN_AI_PRICES`` names, or ``None`` when it is unset."""
        path = environ.get(ENV_GEN_AI_PRICES)
        return cls.from_file(path) if path else None

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> tuple[float, float] | None:
        """The USD cost of the input and of the output tokens, or ``None`` for an unpriced model."""
        pair = self.per_million.get(model)
        if pair is None:
            return None
        return input_tokens * pair[0] / 1e6, output_tokens * pair[1] / 1e6


class _GenAISpan:
    """A span made current for the block; records ``error.type`` and ERROR status on an exception."""

    __slots__ = ("_span", "_start", "_token", "telemetry")

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._span: trace.Span | None = None
        self._token: object | None = None
        self._start = 0.0

    def _skip(self) -> bool:
        """Whether no span is started (tracing cannot record one, as for ``track_stage``): then the block is
        only timed, from now. Asked before the span's name and attributes are built."""
        try:
            if self.telemetry.span_may_record():
                return False
        except Exception as exc:
            self.telemetry.fault("gen_ai_span", exc)
        self._start = time.perf_counter()
        return True

    def _open(self, name: str, kind: SpanKind, attributes: dict[str, str]) -> None:
        try:
            span = self.telemetry.tracer.start_span(name, kind=kind, attributes=attributes)
            self._span = span
            if span.get_span_context().is_valid:
                self._token = otel_context.attach(trace.set_span_in_context(span))
        except Exception as exc:
            self.telemetry.fault("gen_ai_span", exc)
        self._start = time.perf_counter()

    def _close(self, exc: BaseException | None) -> None:
        span, token = self._span, self._token
        if span is None:
            return
        try:
            if exc is not None and span.is_recording():
                span.set_attribute(semconv.ATTR_OTEL_ERROR_TYPE, type(exc).__qualname__)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]
            span.end()
        except Exception as fault:
            self.telemetry.fault("gen_ai_span", fault)

    @property
    def span(self) -> trace.Span:
        """The span; when none was started (tracing cannot record, or it failed), the current one."""
        return trace.get_current_span() if self._span is None else self._span


class GenAIOperation(_GenAISpan):
    """One GenAI inference call: span ``{operation} {model}``, duration and token usage metrics.

    Returned by :meth:`Telemetry.gen_ai_operation`; call :meth:`record_usage` inside the
    block when the token counts are known. Metrics are recorded on exit, ``error.type``
    (the exception's class name) on failure.
    """

    __slots__ = ("_input", "_output", "model", "operation", "provider", "remote")

    def __init__(self, telemetry: Telemetry, model: str, *, provider: str, operation: str, remote: bool) -> None:
        super().__init__(telemetry)
        self.model = model
        self.provider = provider
        self.operation = operation
        self.remote = remote
        self._input: int | None = None
        self._output: int | None = None

    def __enter__(self) -> GenAIOperation:
        if self._skip():
            return self
        self._open(semconv.gen_ai_span_name(self.operation, self.model),
                   SpanKind.CLIENT if self.remote else SpanKind.INTERNAL, {
                       semconv.ATTR_GEN_AI_OPERATION_NAME: self.operation,
                       semconv.ATTR_GEN_AI_PROVIDER_NAME: self.provider,
                       semconv.ATTR_GEN_AI_REQUEST_MODEL: self.model,
                   })
        return self

    def record_usage(self, input_tokens: int, output_tokens: int) -> None:
        """The operation's token counts (``gen_ai.usage.*`` on the span, token metrics on exit)."""
        self._input, self._output = input_tokens, output_tokens
        span = self._span
        if span is not None and span.is_recording():
            span.set_attributes({semconv.ATTR_GEN_AI_INPUT_TOKENS: input_tokens,
                                 semconv.ATTR_GEN_AI_OUTPUT_TOKENS: output_tokens})

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        error_type = "" if exc_type is None else exc_type.__qualname__
        tel = self.telemetry
        recording = self._span if self._span is not None and self._span.is_recording() else None
        if recording is None and not tel._instruments:  # no exemplar, no OTel instruments: off the request path
            tel.deferred.defer(tel.record_gen_ai, self, elapsed, error_type, self._input, self._output, None)
        else:
            tel.record_gen_ai(self, elapsed, error_type, self._input, self._output, recording)
        self._close(exc)


class GenAIRetrieval(_GenAISpan):
    """A retrieval span ``retrieval {data_source}`` (kind CLIENT for a remote store, else INTERNAL)."""

    __slots__ = ("data_source_id", "provider", "remote")

    def __init__(self, telemetry: Telemetry, data_source_id: str, *, provider: str | None, remote: bool) -> None:
        super().__init__(telemetry)
        self.data_source_id = data_source_id
        self.provider = provider
        self.remote = remote

    def __enter__(self) -> trace.Span:
        if self._skip():
            return trace.get_current_span()  # (self.span with no span of its own)
        attributes = {semconv.ATTR_GEN_AI_OPERATION_NAME: semconv.GEN_AI_OPERATION_RETRIEVAL,
                      semconv.ATTR_GEN_AI_DATA_SOURCE_ID: self.data_source_id}
        if self.provider is not None:
            attributes[semconv.ATTR_GEN_AI_PROVIDER_NAME] = self.provider
        self._open(semconv.gen_ai_span_name(semconv.GEN_AI_OPERATION_RETRIEVAL, self.data_source_id),
                   SpanKind.CLIENT if self.remote else SpanKind.INTERNAL, attributes)
        return self.span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(exc)


def record_gen_ai_metrics(
    telemetry: Any, shape: GenAIShape, prices: TokenPrices | None, op: GenAIOperation, elapsed: float,
    error_type: str, input_tokens: int | None, output_tokens: int | None, span: trace.Span | None,
) -> None:
    """Record the GenAI metrics of one finished operation in the shape chosen at start-up."""
    agg = telemetry._agg
    fams = agg.families
    forward = telemetry._forward if telemetry._instruments else None  # passthrough mode

    def histogram(spec: semconv.MetricSpec, labels: tuple[str, ...], value: float) -> None:
        agg.record(fams[spec.name], labels, value, span)
        if forward is not None:
            forward(spec, labels, value)

    def counter(spec: semconv.MetricSpec, labels: tuple[str, ...], value: float) -> None:
        agg.add(fams[spec.name], labels, value)
        if forward is not None:
            forward(spec, labels, value)

    base = (op.operation, op.provider, op.model)
    histogram(semconv.GEN_AI_CLIENT_OPERATION_DURATION, (*base, error_type), elapsed)
    if input_tokens is None or output_tokens is None:
        return
    if shape == "v1.41.0":
        histogram(semconv.GEN_AI_CLIENT_TOKEN_USAGE, (*base, semconv.GEN_AI_TOKEN_TYPE_INPUT), float(input_tokens))
        histogram(semconv.GEN_AI_CLIENT_TOKEN_USAGE, (*base, semconv.GEN_AI_TOKEN_TYPE_OUTPUT), float(output_tokens))
    else:
        histogram(semconv.GEN_AI_INFERENCE_INPUT_TOKENS, base, float(input_tokens))
        histogram(semconv.GEN_AI_INFERENCE_OUTPUT_TOKENS, base, float(output_tokens))
        by_modality = (op.operation, op.provider, semconv.GEN_AI_TOKEN_MODALITY_TEXT, op.model)
        counter(semconv.GEN_AI_USAGE_INPUT_TOKENS, by_modality, float(input_tokens))
        counter(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, by_modality, float(output_tokens))
    if prices is not None:
        cost = prices.cost(op.model, input_tokens, output_tokens)
        if cost is not None:
            counter(semconv.GEN_AI_TOKEN_COST, (op.provider, op.model, semconv.GEN_AI_TOKEN_TYPE_INPUT), cost[0])
            counter(semconv.GEN_AI_TOKEN_COST, (op.provider, op.model, semconv.GEN_AI_TOKEN_TYPE_OUTPUT), cost[1])

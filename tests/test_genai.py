"""OpenTelemetry GenAI semantic conventions on the RAG stage, beside the seed's rag_* names.

Default: the v1.41.0 shape (gen_ai.client.token.usage by gen_ai.token.type, operation duration
with error.type on failure, spans ``{operation} {model}``). Under
``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` (read when the Telemetry is created):
per-direction usage histograms and counters instead of gen_ai.client.token.usage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from examples.diagnosis_service.equipment import EquipmentFleet
from examples.diagnosis_service.gnn import EquipmentGNN
from examples.diagnosis_service.rag import CORPUS_ID, RAG_PROVIDER, RAGPipeline
from mlops_otel import semconv
from mlops_otel.telemetry import Telemetry, TokenPrices, gen_ai_shape_from_env


def _telemetry(**kwargs: Any) -> tuple[Telemetry, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Telemetry(tracer_provider=provider, **kwargs), spans


def _series(tel: Telemetry, spec: semconv.MetricSpec) -> dict[tuple[str, ...], Any]:
    return {s.labels: s for f in tel.snapshot() if f.spec is spec for s in f.series}


def _span(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def test_the_conventions_names_units_and_buckets() -> None:
    usage, duration = semconv.GEN_AI_CLIENT_TOKEN_USAGE, semconv.GEN_AI_CLIENT_OPERATION_DURATION
    assert (usage.name, usage.unit) == ("gen_ai.client.token.usage", "{token}")
    assert usage.kind is semconv.MetricKind.HISTOGRAM
    assert usage.labels == ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model",
                            "gen_ai.token.type")
    assert usage.buckets == (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216,
                             67108864)
    assert (duration.name, duration.unit) == ("gen_ai.client.operation.duration", "s")
    assert duration.buckets == (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                                40.96, 81.92)
    assert "error.type" in duration.labels
    assert semconv.GEN_AI_INFERENCE_INPUT_TOKENS.name == "gen_ai.client.inference.usage.input_tokens"
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS.name == "gen_ai.client.inference.usage.detailed.output_tokens"
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS.labels[2] == "gen_ai.token.modality"
    # The seed's names are untouched.
    assert semconv.RAG_TOKENS_USED.prometheus_name == "rag_tokens_used"
    assert semconv.RAG_GENERATION_DURATION.prometheus_name == "rag_generation_duration_seconds"


def test_default_shape_an_in_process_call() -> None:
    tel, spans = _telemetry(gen_ai_shape=None)
    assert tel.gen_ai_shape == "v1.41.0"
    with tel.gen_ai_operation("llama-3-8b", provider="ollama") as op:
        op.record_usage(120, 30)
    span = _span(spans, "chat llama-3-8b")
    assert span.kind is SpanKind.INTERNAL
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "ollama", "gen_ai.request.model": "llama-3-8b",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
    }
    usage = _series(tel, semconv.GEN_AI_CLIENT_TOKEN_USAGE)
    assert {k: (s.count, s.sum) for k, s in usage.items()} == {
        ("chat", "ollama", "llama-3-8b", "input"): (1, 120.0),
        ("chat", "ollama", "llama-3-8b", "output"): (1, 30.0),
    }
    (duration,) = _series(tel, semconv.GEN_AI_CLIENT_OPERATION_DURATION).values()
    assert duration.labels == ("chat", "ollama", "llama-3-8b", "")  # no error.type on success
    assert not _series(tel, semconv.GEN_AI_INFERENCE_INPUT_TOKENS)
    assert not _series(tel, semconv.GEN_AI_USAGE_INPUT_TOKENS)
    # The sampled span is the exemplar of the token bucket it was recorded into.
    exemplar = next(e for e in usage[("chat", "ollama", "llama-3-8b", "input")].exemplars if e is not None)
    assert span.context is not None
    assert exemplar.span_id == span.context.span_id


def test_a_remote_call_is_a_client_span_and_a_failure_has_error_type() -> None:
    tel, spans = _telemetry()
    with pytest.raises(TimeoutError), tel.gen_ai_operation("gpt-4o", provider="openai", remote=True):
        raise TimeoutError("upstream")
    span = _span(spans, "chat gpt-4o")
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "TimeoutError"
    (labels,) = _series(tel, semconv.GEN_AI_CLIENT_OPERATION_DURATION)
    assert labels == ("chat", "openai", "gpt-4o", "TimeoutError")
    assert not _series(tel, semconv.GEN_AI_CLIENT_TOKEN_USAGE)  # no usage was known


def test_latest_experimental_is_read_when_the_telemetry_is_created(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(semconv.ENV_SEMCONV_STABILITY_OPT_IN, raising=False)
    before, _ = _telemetry()
    monkeypatch.setenv(semconv.ENV_SEMCONV_STABILITY_OPT_IN, "http, gen_ai_latest_experimental")
    tel, _ = _telemetry()
    assert (before.gen_ai_shape, tel.gen_ai_shape) == ("v1.41.0", "latest_experimental")
    assert gen_ai_shape_from_env({"OTEL_SEMCONV_STABILITY_OPT_IN": "database"}) == "v1.41.0"
    with tel.gen_ai_operation("m", provider="p") as op:
        op.record_usage(7, 3)
    assert not _series(tel, semconv.GEN_AI_CLIENT_TOKEN_USAGE)
    assert {k: s.sum for k, s in _series(tel, semconv.GEN_AI_INFERENCE_INPUT_TOKENS).items()} == {
        ("chat", "p", "m"): 7}
    assert {k: s.sum for k, s in _series(tel, semconv.GEN_AI_INFERENCE_OUTPUT_TOKENS).items()} == {
        ("chat", "p", "m"): 3}
    assert {k: s.value for k, s in _series(tel, semconv.GEN_AI_USAGE_INPUT_TOKENS).items()} == {
        ("chat", "p", "text", "m"): 7}
    assert {k: s.value for k, s in _series(tel, semconv.GEN_AI_USAGE_OUTPUT_TOKENS).items()} == {
        ("chat", "p", "text", "m"): 3}
    assert _series(tel, semconv.GEN_AI_CLIENT_OPERATION_DURATION)


def test_prometheus_and_otlp_names() -> None:
    tel, _ = _telemetry()
    with tel.gen_ai_operation("m1", provider="p") as op:
        op.record_usage(5, 17)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(tel.render_prometheus().decode()) for s in f.samples}
    key = ("gen_ai_client_token_usage_bucket", (("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", "p"),
                                                ("gen_ai_request_model", "m1"), ("gen_ai_token_type", "output"),
                                                ("le", "16.0")))
    assert samples[key] == 0.0
    assert samples[(key[0], (*key[1][:4], ("le", "64.0")))] == 1.0
    assert any(name == "gen_ai_client_operation_duration_seconds_count" for name, _ in samples)

    metrics = {m.name: m for m in tel.metrics_data().resource_metrics[0].scope_metrics[0].metrics}
    usage = metrics["gen_ai.client.token.usage"]
    assert usage.unit == "{token}"
    assert {dict(p.attributes or {})["gen_ai.token.type"] for p in usage.data.data_points} == {"input", "output"}
    (point,) = metrics["gen_ai.client.operation.duration"].data.data_points
    assert "error.type" not in (point.attributes or {})  # absent, not empty, on success


def test_retrieval_span() -> None:
    tel, spans = _telemetry()
    with tel.gen_ai_retrieval("kb-1", provider="chroma", remote=True):
        pass
    span = _span(spans, "retrieval kb-1")
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {"gen_ai.operation.name": "retrieval", "gen_ai.data_source.id": "kb-1",
                                           "gen_ai.provider.name": "chroma"}


def test_token_cost_is_priced_from_the_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"m": {"input": 2.0, "output": 8.0}}))
    monkeypatch.setenv("MLOPS_OTEL_GEN_AI_PRICES", str(prices))
    tel, _ = _telemetry()
    for model in ("m", "unpriced"):
        with tel.gen_ai_operation(model, provider="p") as op:
            op.record_usage(1_000_000, 500_000)
    assert {k: s.value for k, s in _series(tel, semconv.GEN_AI_TOKEN_COST).items()} == {
        ("p", "m", "input"): 2.0, ("p", "m", "output"): 4.0}
    monkeypatch.delenv("MLOPS_OTEL_GEN_AI_PRICES")
    assert _telemetry()[0].gen_ai_prices is None  # optional: no file, no cost metric
    prices.write_text(json.dumps({"m": {"input": "free"}}))
    with pytest.raises(ValueError, match="price of 'm'"):
        TokenPrices.from_file(prices)


def test_the_example_rag_stage_emits_retrieval_and_generation_beside_the_seed_names() -> None:
    tel, spans = _telemetry()
    fleet = EquipmentFleet()
    import numpy as np

    readings = fleet.simulate(fleet.ids[0], np.random.default_rng(0))
    result = EquipmentGNN("v2.1.0").predict(readings)
    rag = RAGPipeline()
    with tel.track_stage(semconv.STAGE_RAG_GENERATION, model_version=rag.model_version):
        answer = rag.generate(result, telemetry=tel)
        tel.record_rag_metrics(answer.model_version, answer.generation_time_ms, answer.total_tokens,
                               input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
    stage = _span(spans, semconv.SPAN_RAG_GENERATION)
    retrieval = _span(spans, f"retrieval {CORPUS_ID}")
    generation = _span(spans, f"text_completion {rag.model_version}")
    assert stage.context is not None
    assert retrieval.parent is not None
    assert generation.parent is not None
    assert retrieval.parent.span_id == generation.parent.span_id == stage.context.span_id  # siblings
    assert (generation.attributes or {})["gen_ai.usage.input_tokens"] == answer.input_tokens
    assert (generation.attributes or {})["gen_ai.provider.name"] == RAG_PROVIDER
    usage = _series(tel, semconv.GEN_AI_CLIENT_TOKEN_USAGE)
    assert usage[("text_completion", RAG_PROVIDER, rag.model_version, "output")].sum == answer.output_tokens
    assert _series(tel, semconv.RAG_TOKENS_USED)[(rag.model_version,)].sum == answer.total_tokens


def test_passthrough_mode_also_sends_the_gen_ai_measurements_to_the_meter_provider() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    tel, _ = _telemetry(mode="passthrough", meter_provider=MeterProvider(metric_readers=[reader]),
                        gen_ai_shape="v1.41.0")
    with tel.gen_ai_operation("m", provider="p") as op:
        op.record_usage(11, 4)
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    points = metrics["gen_ai.client.token.usage"].data.data_points
    assert {dict(p.attributes or {})["gen_ai.token.type"]: p.sum for p in points} == {"input": 11, "output": 4}
    (duration,) = metrics["gen_ai.client.operation.duration"].data.data_points
    assert "error.type" not in (duration.attributes or {})


def test_without_an_sdk_no_span_is_started_and_the_metrics_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """While tracing cannot record, GenAI operations start no span (#16, as track_stage) and their metrics,
    written off the request path, are all there at the next read."""
    from opentelemetry import trace

    started: list[str] = []
    proxy_start = trace.ProxyTracer.start_span

    def counting(self: trace.ProxyTracer, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        started.append(name)
        return proxy_start(self, name, *args, **kwargs)

    monkeypatch.setattr(trace.ProxyTracer, "start_span", counting)
    tel = Telemetry(gen_ai_shape="v1.41.0")  # the global tracer: a proxy, no SDK installed in this process
    try:
        for _ in range(3):
            with tel.gen_ai_retrieval(CORPUS_ID) as span:
                assert not span.is_recording()
            with tel.gen_ai_operation("m", provider="p") as op:
                op.record_usage(10, 5)
        assert started == []
        usage = _series(tel, semconv.GEN_AI_CLIENT_TOKEN_USAGE)
        assert sum(s.count for s in usage.values()) == 6
        durations = _series(tel, semconv.GEN_AI_CLIENT_OPERATION_DURATION)
        assert sum(s.count for s in durations.values()) == 3
    finally:
        tel.close()

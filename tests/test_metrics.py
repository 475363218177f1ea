"""The seed-compatible recording API: decorator, stage tracker, spans, metrics_app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import mlops_otel
from mlops_otel import metrics, semconv
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tel(spans: InMemorySpanExporter) -> Telemetry:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Telemetry(tracer_provider=provider)


@pytest.fixture
def default_reset() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


def test_decorator_sync_counts_success_with_served_version(tel: Telemetry, spans: InMemorySpanExporter) -> None:
    @metrics.track_diagnosis_request("create_diagnosis", telemetry=tel)
    def handler(x: int) -> int:
        with metrics.track_stage(semconv.STAGE_GNN_INFERENCE, model_version="v2.2.0", telemetry=tel):
            metrics.record_gnn_metrics("v2.2.0", 12.0, 0.4, 0.95, telemetry=tel)
        return x * 2

    assert handler(21) == 42
    assert handler.__name__ == "handler"
    assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="v2.2.0") == 1.0
    assert sample_value(tel, "diagnosis_duration_seconds_count", stage="create_diagnosis") == 1.0
    assert sample_value(tel, "diagnosis_duration_seconds_count", stage="gnn_inference") == 1.0
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {semconv.SPAN_DIAGNOSIS, semconv.SPAN_GNN_INFERENCE}
    gnn, diag = by_name[semconv.SPAN_GNN_INFERENCE], by_name[semconv.SPAN_DIAGNOSIS]
    assert gnn.parent is not None
    assert gnn.parent.span_id == diag.context.span_id
    assert gnn.attributes is not None
    assert diag.attributes is not None
    assert gnn.attributes[semconv.SPAN_ATTR_ANOMALY_SCORE] == 0.4
    assert gnn.attributes[semconv.SPAN_ATTR_CONFIDENCE] == 0.95
    assert diag.attributes[semconv.SPAN_ATTR_MODEL_VERSION] == "v2.2.0"


def test_decorator_async_counts_errors_and_reraises(tel: Telemetry, spans: InMemorySpanExporter) -> None:
    @metrics.track_diagnosis_request("create_diagnosis", telemetry=tel)
    async def handler() -> None:
        await asyncio.sleep(0)
        async with metrics.track_stage(semconv.STAGE_RAG_GENERATION, telemetry=tel):
            raise TimeoutError("llm too slow")

    with pytest.raises(TimeoutError, match="llm too slow"):
        asyncio.run(handler())
    assert sample_value(tel, "diagnosis_requests_total", status="error", model_version="unknown") == 1.0
    assert sample_value(tel, "diagnosis_errors_total", error_type="TimeoutError", stage="rag_generation") == 1.0
    assert sample_value(tel, "diagnosis_errors_total", error_type="TimeoutError", stage="create_diagnosis") == 1.0
    rag = next(s for s in spans.get_finished_spans() if s.name == semconv.SPAN_RAG_GENERATION)
    assert rag.status.status_code is StatusCode.ERROR
    assert [e.name for e in rag.events] == ["exception"]


def test_concurrent_async_requests_keep_their_own_version(tel: Telemetry) -> None:
    @metrics.track_diagnosis_request("create_diagnosis", telemetry=tel)
    async def handler(version: str) -> None:
        await asyncio.sleep(0.001)
        metrics.record_gnn_metrics(version, 1.0, 0.1, 0.9, telemetry=tel)
        await asyncio.sleep(0.001)

    async def main() -> None:
        await asyncio.gather(*(handler(f"v{i % 2}") for i in range(20)))

    asyncio.run(main())
    assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="v0") == 10.0
    assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="v1") == 10.0


def test_rag_span_uses_genai_conventions(tel: Telemetry, spans: InMemorySpanExporter) -> None:
    with tel.track_stage(semconv.STAGE_RAG_GENERATION, model_version="rag-1"):
        tel.record_rag_metrics("rag-1", 800.0, 700, input_tokens=600, output_tokens=100)
    (span,) = spans.get_finished_spans()
    assert span.name == semconv.SPAN_RAG_GENERATION
    assert span.attributes is not None
    assert span.attributes[semconv.ATTR_GEN_AI_REQUEST_MODEL] == "rag-1"
    assert span.attributes[semconv.ATTR_GEN_AI_INPUT_TOKENS] == 600
    assert span.attributes[semconv.ATTR_GEN_AI_OUTPUT_TOKENS] == 100


def test_empty_request_name_is_rejected(tel: Telemetry) -> None:
    with pytest.raises(ValueError, match=r"name must be a non-empty string, got ''"):
        tel.track_diagnosis_request("")


def test_module_api_uses_the_default_resolved_at_call_time(default_reset: None) -> None:
    @metrics.track_diagnosis_request("late")
    def handler() -> None:
        metrics.record_error("ValueError", "parse")

    runtime = mlops_otel.configure()  # configured after decoration
    handler()
    assert sample_value(runtime.telemetry, "diagnosis_requests_total", status="success",
                        model_version="unknown") == 1.0
    assert sample_value(runtime.telemetry, "diagnosis_errors_total", error_type="ValueError",
                        stage="parse") == 1.0
    metrics.set_drift_score("gnn", "v1", 0.2)
    assert sample_value(None, "model_drift_score", model_type="gnn", model_version="v1") == 0.2


def test_metrics_app_serves_the_exposition(tel: Telemetry) -> None:
    tel.record_gnn_metrics("v2.1.0", 10.0, 0.2, 0.9)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=metrics.metrics_app(telemetry=tel))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/")

    response = asyncio.run(fetch())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'gnn_confidence_bucket{le="0.9",model_version="v2.1.0"} 1.0' in response.text

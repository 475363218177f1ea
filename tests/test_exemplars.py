"""Exemplars: a histogram bucket carries the trace and span id of a sampled span recorded into it.

In the OpenMetrics exposition (served when the scraper asks for it), in OTLP, and across the
fleet merge; never in the classic text format, and never for an unsampled or absent span.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from mlops_otel import semconv
from mlops_otel.telemetry import Telemetry, merge_snapshots, snapshot_from_json, snapshot_to_json


def _telemetry(sampler: Any = None) -> tuple[Telemetry, InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return Telemetry(tracer_provider=provider), spans


def _gnn_request(tel: Telemetry, seconds_ms: float = 12.0) -> None:
    with tel.request_scope("diagnose"), tel.track_stage(semconv.STAGE_GNN_INFERENCE, "v1"):
        tel.record_gnn_metrics("v1", seconds_ms, 0.42, 0.93)


def _asgi_get(app: Any, accept: str) -> tuple[str, bytes]:
    """GET / from an ASGI app; return the content type and body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "root_path": "",
             "headers": [(b"accept", accept.encode())]}
    asyncio.run(app(scope, receive, send))
    headers = {k.lower(): v for k, v in sent[0]["headers"]}
    return headers[b"content-type"].decode(), b"".join(m.get("body", b"") for m in sent[1:])


def test_a_sampled_span_becomes_the_exemplar_of_the_bucket_it_was_recorded_into() -> None:
    tel, spans = _telemetry()
    _gnn_request(tel, 12.0)  # 0.012 s: bucket le=0.025 of gnn_inference_duration
    stage = next(s for s in spans.get_finished_spans() if s.name == semconv.SPAN_GNN_INFERENCE)
    family = next(f for f in tel.snapshot() if f.spec is semconv.GNN_INFERENCE_DURATION)
    (series,) = family.series
    index = semconv.GNN_INFERENCE_DURATION.buckets.index(0.025)
    exemplar = series.exemplars[index]
    assert exemplar is not None
    assert exemplar.value == pytest.approx(0.012)
    assert exemplar.trace_id == stage.context.trace_id
    assert exemplar.span_id == stage.context.span_id
    assert [i for i, e in enumerate(series.exemplars) if e is not None] == [index]


def test_openmetrics_carries_the_exemplar_and_the_classic_text_does_not() -> None:
    tel, spans = _telemetry()
    _gnn_request(tel)
    stage = next(s for s in spans.get_finished_spans() if s.name == semconv.SPAN_GNN_INFERENCE)
    app = tel.metrics_app()

    content_type, body = _asgi_get(app, "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    found = {
        (s.name, s.labels.get("le")): s.exemplar
        for f in text_string_to_metric_families(text) for s in f.samples if s.exemplar is not None
    }
    name = semconv.GNN_INFERENCE_DURATION.prometheus_name
    exemplar = found[(f"{name}_bucket", "0.025")]
    assert exemplar.labels == {"trace_id": format(stage.context.trace_id, "032x"),
                               "span_id": format(stage.context.span_id, "016x")}
    assert exemplar.value == pytest.approx(0.012)

    content_type, body = _asgi_get(app, "text/plain")
    assert content_type.startswith("text/plain")
    assert b"trace_id" not in body
    assert body == tel.render_prometheus()


def test_otlp_histogram_points_carry_the_exemplars() -> None:
    tel, spans = _telemetry()
    _gnn_request(tel)
    stage = next(s for s in spans.get_finished_spans() if s.name == semconv.SPAN_GNN_INFERENCE)
    request = encode_metrics(tel.metrics_data())
    decoded = metrics_pb2.MetricsData()
    decoded.ParseFromString(request.SerializeToString())  # same message layout as the export request
    metrics = {m.name: m for rm in decoded.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    (point,) = metrics[semconv.GNN_INFERENCE_DURATION.name].histogram.data_points
    (exemplar,) = point.exemplars
    assert exemplar.trace_id == stage.context.trace_id.to_bytes(16, "big")
    assert exemplar.span_id == stage.context.span_id.to_bytes(8, "big")
    assert exemplar.as_double == pytest.approx(0.012)


def test_no_span_and_an_unsampled_span_leave_no_exemplar() -> None:
    plain = Telemetry()
    plain.record_gnn_metrics("v1", 12.0, 0.4, 0.9)
    unsampled, _ = _telemetry(ALWAYS_OFF)
    _gnn_request(unsampled)
    for tel in (plain, unsampled):
        for family in tel.snapshot():
            assert all(not s.exemplars for s in family.series), family.spec.name
        (point,) = [p for m in tel.metrics_data().resource_metrics[0].scope_metrics[0].metrics
                    if m.name == semconv.GNN_INFERENCE_DURATION.name for p in m.data.data_points]
        assert point.exemplars == []


def test_the_fleet_merge_and_its_json_keep_the_newest_exemplar_per_bucket() -> None:
    first, _ = _telemetry()
    second, spans = _telemetry()
    _gnn_request(first)
    _gnn_request(second)
    newest = next(s for s in spans.get_finished_spans() if s.name == semconv.SPAN_GNN_INFERENCE)
    workers = [snapshot_from_json(snapshot_to_json(t.snapshot())) for t in (first, second)]
    merged = next(f for f in merge_snapshots(workers) if f.spec is semconv.GNN_INFERENCE_DURATION)
    (series,) = merged.series
    assert series.count == 2
    kept = [e for e in series.exemplars if e is not None]
    assert [(e.trace_id, e.span_id) for e in kept] == [(newest.context.trace_id, newest.context.span_id)]

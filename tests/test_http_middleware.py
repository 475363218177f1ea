"""instrument_app(..., instrument_http="light"): HttpServerMiddleware's spans and metrics (stable HTTP conventions)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry import trace as trace_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import mlops_otel
from mlops_otel.fastapi import instrument_app, uninstrument_app
from mlops_otel.stores import MemoryStore

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def _reset_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(503, "down")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


@pytest.fixture
def instrumented() -> Iterator[tuple[TestClient, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    app = make_app()
    instrument_app(app, tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader]),
                   store=MemoryStore(), instrument_http="light")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, spans, reader


def server_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


def test_one_server_span_named_by_route_with_the_stable_attributes(instrumented: Any) -> None:
    client, spans, reader = instrumented
    assert client.get("/items/42?x=1", headers={"user-agent": "probe/1"}).json() == {"item": 42}
    (span,) = server_spans(spans)
    assert span.name == "GET /items/{item_id}"
    attrs = dict(span.attributes or {})
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.route"] == "/items/{item_id}"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.path"] == "/items/42"
    assert attrs["url.query"] == "x=1"
    assert attrs["url.scheme"] == "http"
    assert attrs["server.address"] == "testserver"
    assert attrs["user_agent.original"] == "probe/1"
    assert "error.type" not in attrs
    assert span.status.status_code is StatusCode.UNSET
    # no internal "http send"/"http receive" spans
    assert [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.INTERNAL] == []
    (duration,) = points(reader, "http.server.request.duration")
    assert duration.count == 1
    assert duration.sum > 0
    assert dict(duration.attributes) == {"http.request.method": "GET", "url.scheme": "http", "http.route":
                                         "/items/{item_id}", "http.response.status_code": 200,
                                         "network.protocol.version": "1.1"}
    (active,) = points(reader, "http.server.active_requests")
    assert active.value == 0


def test_parent_is_taken_from_traceparent(instrumented: Any) -> None:
    client, spans, _ = instrumented
    client.get("/items/1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    (span,) = server_spans(spans)
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == PARENT_ID


def test_5xx_and_exceptions_mark_the_span_as_error(instrumented: Any) -> None:
    client, spans, reader = instrumented
    assert client.get("/unavailable").status_code == 503
    assert client.get("/boom").status_code == 500
    unavailable, boom = server_spans(spans)
    assert unavailable.status.status_code is StatusCode.ERROR
    assert dict(unavailable.attributes or {})["error.type"] == "503"
    assert boom.status.status_code is StatusCode.ERROR
    assert dict(boom.attributes or {})["error.type"] == "RuntimeError"
    assert dict(boom.attributes or {})["http.response.status_code"] == 500
    assert any(e.name == "exception" for e in boom.events)
    durations = points(reader, "http.server.request.duration")
    codes = sorted(dict(p.attributes)["http.response.status_code"] for p in durations)
    assert codes == [500, 503]


def test_excluded_urls_are_not_traced() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = make_app()
    instrument_app(app, tracer_provider=provider, store=MemoryStore(), instrument_http="light",
                   excluded_urls="items/7")
    with TestClient(app) as client:
        client.get("/items/7")
        client.get("/items/8")
    assert [s.attributes["url.path"] for s in server_spans(spans) if s.attributes] == ["/items/8"]


def test_without_an_otel_sdk_requests_still_work_and_uninstrument_removes_it() -> None:
    app = make_app()
    instrument_app(app, store=MemoryStore(), instrument_http="light")
    assert len(app.user_middleware) == 1
    with TestClient(app) as client:
        assert client.get("/items/3").json() == {"item": 3}
    uninstrument_app(app)
    assert app.user_middleware == []


class _BrokenTracer(trace_api.Tracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace_api.Span:
        raise RuntimeError("tracer broken")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tracer broken")


class _BrokenProvider(trace_api.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        return _BrokenTracer()


def test_a_failing_tracer_never_breaks_the_request() -> None:
    app = make_app()
    instrument_app(app, tracer_provider=_BrokenProvider(), store=MemoryStore(), instrument_http="light")
    with TestClient(app) as client:
        assert client.get("/items/5").json() == {"item": 5}
        assert client.get("/items/6").json() == {"item": 6}
    assert trace_api.get_current_span() is trace_api.INVALID_SPAN

"""instrument_app's default HTTP layer (instrument_http="light"): HttpServerMiddleware, OTel's stable HTTP conventions.

Each test checks one thing users got from the OTel FastAPI/ASGI instrumentation and must still get.
The propagation test through a real uvicorn (zero-code) is in tests/test_autoinstrument.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from opentelemetry import baggage
from opentelemetry import trace as trace_api
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.propagators import TraceResponsePropagator, set_global_response_propagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import mlops_otel
from mlops_otel import semconv
from mlops_otel.fastapi import HttpServerConfig, HttpServerMiddleware, instrument_app, uninstrument_app
from mlops_otel.stores import MemoryStore
from mlops_otel.validation import InvalidValueError

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
METHOD = semconv.ATTR_HTTP_REQUEST_METHOD
ROUTE = semconv.ATTR_HTTP_ROUTE
STATUS = semconv.ATTR_HTTP_RESPONSE_STATUS_CODE
ERROR_TYPE = semconv.ATTR_OTEL_ERROR_TYPE
DURATION = semconv.HTTP_SERVER_REQUEST_DURATION.name
ACTIVE = semconv.HTTP_SERVER_ACTIVE_REQUESTS.name


@pytest.fixture(autouse=True)
def _reset_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


class Telemetry:
    """An in-memory tracer and meter provider pair."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def server_spans(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is SpanKind.SERVER]

    def metrics(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name]

    def points(self, name: str) -> list[Any]:
        return [p for m in self.metrics(name) for p in m.data.data_points]


def make_app(telemetry: Telemetry | None = None) -> FastAPI:
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

    @app.get("/baggage")
    async def read_baggage() -> dict[str, Any]:
        return {"user": baggage.get_baggage("user"), "span_valid": trace_api.get_current_span().get_span_context()
                .is_valid}

    if telemetry is not None:
        @app.get("/active")
        async def active() -> dict[str, int]:
            return {"active": sum(p.value for p in telemetry.points(ACTIVE))}

    router = APIRouter(prefix="/v1")

    @router.get("/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    app.include_router(router)
    sub = FastAPI()

    @sub.get("/inner/{x}")
    async def inner(x: str) -> dict[str, str]:
        return {"x": x}

    app.mount("/sub", sub)
    return app


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry()


@pytest.fixture
def client(telemetry: Telemetry) -> Iterator[TestClient]:
    app = make_app(telemetry)
    # No instrument_http: "light" is the default.
    instrument_app(app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                   store=MemoryStore())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_default_is_one_server_span_named_by_route_with_the_stable_attributes(
        client: TestClient, telemetry: Telemetry) -> None:
    assert client.get("/items/42?x=1", headers={"user-agent": "probe/1"}).json() == {"item": 42}
    (span,) = telemetry.server_spans()
    assert span.name == "GET /items/{item_id}"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "mlops_otel.fastapi"
    assert span.instrumentation_scope.schema_url == semconv.HTTP_SCHEMA_URL
    attrs = dict(span.attributes or {})
    assert attrs == {
        METHOD: "GET", ROUTE: "/items/{item_id}", STATUS: 200,
        semconv.ATTR_URL_PATH: "/items/42", semconv.ATTR_URL_QUERY: "x=1", semconv.ATTR_URL_SCHEME: "http",
        semconv.ATTR_SERVER_ADDRESS: "testserver", semconv.ATTR_NETWORK_PROTOCOL_VERSION: "1.1",
        semconv.ATTR_USER_AGENT_ORIGINAL: "probe/1", semconv.ATTR_CLIENT_ADDRESS: "testclient",
        semconv.ATTR_CLIENT_PORT: 50000,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None
    # no internal "http send"/"http receive" spans
    assert [s.name for s in telemetry.spans.get_finished_spans() if s.kind is SpanKind.INTERNAL] == []


def test_duration_histogram_in_seconds_with_the_stable_buckets_and_active_requests(
        client: TestClient, telemetry: Telemetry) -> None:
    assert client.get("/items/1").status_code == 200
    (metric,) = telemetry.metrics(DURATION)
    assert metric.unit == "s"
    (point,) = metric.data.data_points
    assert point.count == 1
    assert 0 < point.sum < 10  # seconds, not milliseconds
    assert tuple(point.explicit_bounds) == semconv.HTTP_SERVER_REQUEST_DURATION.buckets
    assert set(dict(point.attributes)) <= set(semconv.HTTP_SERVER_REQUEST_DURATION.labels)
    assert dict(point.attributes) == {METHOD: "GET", semconv.ATTR_URL_SCHEME: "http", ROUTE: "/items/{item_id}",
                                      STATUS: 200, semconv.ATTR_NETWORK_PROTOCOL_VERSION: "1.1"}
    # in flight during the request, back to 0 after it
    assert client.get("/active").json() == {"active": 1}
    (active,) = telemetry.points(ACTIVE)
    assert active.value == 0
    assert dict(active.attributes) == {METHOD: "GET", semconv.ATTR_URL_SCHEME: "http"}


def test_route_templates_of_routers_and_mounts(client: TestClient, telemetry: Telemetry) -> None:
    client.get("/v1/things/a")
    client.get("/sub/inner/b")
    client.get("/nowhere")
    names = [s.name for s in telemetry.server_spans()]
    assert names == ["GET /v1/things/{thing}", "GET /sub/inner/{x}", "GET"]
    routes = {dict(p.attributes).get(ROUTE) for p in telemetry.points(DURATION)}
    assert routes == {"/v1/things/{thing}", "/sub/inner/{x}", None}


def test_traceparent_and_baggage_join_the_callers_trace(client: TestClient, telemetry: Telemetry) -> None:
    answer = client.get("/baggage", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "baggage": "user=ada"})
    assert answer.json() == {"user": "ada", "span_valid": True}
    (span,) = telemetry.server_spans()
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.span_id, "016x") == PARENT_ID


def test_5xx_and_exceptions_are_errors_and_exceptions_are_recorded_and_reraised(
        client: TestClient, telemetry: Telemetry) -> None:
    assert client.get("/unavailable").status_code == 503
    assert client.get("/boom").status_code == 500
    assert client.get("/items/x").status_code == 422  # a 4xx is the client's error, not the server's
    unavailable, boom, invalid = telemetry.server_spans()
    assert unavailable.status.status_code is StatusCode.ERROR
    assert dict(unavailable.attributes or {})[ERROR_TYPE] == "503"
    assert unavailable.status.description is None  # N1: the status code already says it
    assert boom.status.status_code is StatusCode.ERROR
    assert boom.status.description == "RuntimeError: boom"
    assert dict(boom.attributes or {})[ERROR_TYPE] == "RuntimeError"
    assert dict(boom.attributes or {})[STATUS] == 500
    assert [e.attributes["exception.type"] for e in boom.events if e.name == "exception" and e.attributes] \
        == ["RuntimeError"]
    assert invalid.status.status_code is StatusCode.UNSET
    assert ERROR_TYPE not in dict(invalid.attributes or {})
    errors = sorted((dict(p.attributes)[STATUS], dict(p.attributes).get(ERROR_TYPE))
                    for p in telemetry.points(DURATION))
    assert errors == [(422, None), (500, "RuntimeError"), (503, "503")]
    with TestClient(client.app) as raising, pytest.raises(RuntimeError, match="boom"):  # re-raised to the server
        raising.get("/boom")


def test_excluded_urls_argument_and_variable_read_when_instrumenting(monkeypatch: pytest.MonkeyPatch) -> None:
    def paths(**options: Any) -> list[str]:
        telemetry = Telemetry()
        app = make_app()
        instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore(), **options)
        monkeypatch.delenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", raising=False)  # too late for this app
        with TestClient(app) as test_client:
            for path in ("/items/7", "/items/8", "/v1/things/health"):
                test_client.get(path)
        return [str((s.attributes or {})[semconv.ATTR_URL_PATH]) for s in telemetry.server_spans()]

    assert paths(excluded_urls="items/7") == ["/items/8", "/v1/things/health"]
    monkeypatch.setenv("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "things/health,items/8")
    assert paths() == ["/items/7"]
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "items/7")  # the generic variable, when no FASTAPI one
    assert paths() == ["/items/8", "/v1/things/health"]


def test_instrumenting_twice_adds_one_layer_and_uninstrument_removes_it(telemetry: Telemetry) -> None:
    app = make_app()
    for _ in range(2):
        instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())
    with TestClient(app) as test_client:
        test_client.get("/items/1")
    assert len(telemetry.server_spans()) == 1
    uninstrument_app(app)
    uninstrument_app(app)
    with TestClient(app) as test_client:
        assert test_client.get("/items/2").json() == {"item": 2}
    assert len(telemetry.server_spans()) == 1
    instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())
    with TestClient(app) as test_client:
        test_client.get("/items/3")
    assert len(telemetry.server_spans()) == 2


def test_no_second_layer_on_an_app_the_otel_instrumentation_already_traces(telemetry: Telemetry) -> None:
    app = make_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    try:
        instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())
        with TestClient(app) as test_client:
            test_client.get("/items/1")
        (span,) = telemetry.server_spans()
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.fastapi"
    finally:
        uninstrument_app(app)
        FastAPIInstrumentor.uninstrument_app(app)


def test_uninstrument_keeps_an_otel_instrumentation_added_after_ours(telemetry: Telemetry) -> None:
    app = make_app()
    instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())
    FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    try:
        uninstrument_app(app)  # ours goes, OTel's stays
        with TestClient(app) as test_client:
            test_client.get("/items/1")
        scopes = [s.instrumentation_scope.name for s in telemetry.server_spans() if s.instrumentation_scope]
        assert scopes == ["opentelemetry.instrumentation.fastapi"]
    finally:
        FastAPIInstrumentor.uninstrument_app(app)


def test_otel_is_the_switch_back_and_true_is_its_deprecated_spelling(telemetry: Telemetry) -> None:
    for choice in ("otel", True):
        app = make_app()
        if choice is True:
            with pytest.warns(DeprecationWarning, match='instrument_http="otel"'):
                instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore(),
                               instrument_http=choice)
        else:
            instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore(), instrument_http=choice)
        with TestClient(app) as test_client:
            test_client.get("/items/1")
        uninstrument_app(app)
    scopes = {s.instrumentation_scope.name for s in telemetry.server_spans() if s.instrumentation_scope}
    assert scopes == {"opentelemetry.instrumentation.fastapi"}
    assert len(telemetry.server_spans()) == 2
    with pytest.raises(InvalidValueError, match="instrument_http"):
        instrument_app(make_app(), store=MemoryStore(), instrument_http="fast")  # type: ignore[arg-type]


def test_false_adds_no_http_layer(telemetry: Telemetry) -> None:
    app = make_app()
    instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore(), instrument_http=False)
    with TestClient(app) as test_client:
        test_client.get("/items/1")
    assert telemetry.server_spans() == []


def test_captured_headers_and_the_response_propagator(monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-tenant,authorization")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS", "authorization")
    app = make_app()
    instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())
    set_global_response_propagator(TraceResponsePropagator())
    try:
        with TestClient(app) as test_client:
            answer = test_client.get("/items/1", headers={"x-tenant": "acme", "authorization": "Bearer s3cret"})
    finally:
        set_global_response_propagator(None)
    (span,) = telemetry.server_spans()
    attrs = dict(span.attributes or {})
    assert attrs["http.request.header.x_tenant"] == ("acme",)
    assert attrs["http.request.header.authorization"] == ("[REDACTED]",)
    assert attrs["http.response.header.content_type"] == ("application/json",)
    trace_id, span_id = format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")
    assert answer.headers["traceresponse"] == f"00-{trace_id}-{span_id}-{span.context.trace_flags:02x}"


def test_suppressed_http_instrumentation_is_honoured(telemetry: Telemetry) -> None:
    import asyncio

    import httpx
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    app = make_app()
    instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())

    async def calls() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            with suppress_http_instrumentation():
                assert (await http.get("/items/1")).status_code == 200
            assert (await http.get("/items/2")).status_code == 200

    asyncio.run(calls())
    assert [dict(s.attributes or {})[semconv.ATTR_URL_PATH] for s in telemetry.server_spans()] == ["/items/2"]


def test_signatures_in_the_query_are_redacted(client: TestClient, telemetry: Telemetry) -> None:
    client.get("/items/1?sig=s3cret&x=1")
    (span,) = telemetry.server_spans()
    assert dict(span.attributes or {})[semconv.ATTR_URL_QUERY] == "sig=REDACTED&x=1"


def test_unknown_methods_are_reported_as_other(client: TestClient, telemetry: Telemetry) -> None:
    client.request("PROPFIND", "/items/1")
    (span,) = telemetry.server_spans()
    assert span.name == "HTTP /items/{item_id}"
    attrs = dict(span.attributes or {})
    assert attrs[METHOD] == "_OTHER"
    assert attrs[semconv.ATTR_HTTP_REQUEST_METHOD_ORIGINAL] == "PROPFIND"


_GLOBALS_SCRIPT = """
import json
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from mlops_otel.fastapi import HttpServerConfig, HttpServerMiddleware, instrument_app, uninstrument_app
from mlops_otel.stores import MemoryStore

app = FastAPI()
app.get("/ping")(lambda: "pong")
instrument_app(app, store=MemoryStore())  # no providers: the global ones, set later, when the app runs
spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
with TestClient(app) as client:
    client.get("/ping")
data = reader.get_metrics_data()
names = sorted(m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
server = [(s.instrumentation_scope.name, s.name) for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
uninstrument_app(app)  # gives the HTTP layer back to FastAPI's own telemetry, if this FastAPI has one
spans.clear()
with TestClient(app) as client:
    client.get("/ping")
after = [s.instrumentation_scope.name for s in spans.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
native = hasattr(app, "_native_telemetry")
print(json.dumps({"spans": server, "metrics": names, "after": after, "native": native}))
"""


def test_without_providers_the_global_ones_are_used() -> None:
    # In a subprocess: the global providers can be set only once per process.
    done = subprocess.run([sys.executable, "-c", _GLOBALS_SCRIPT], capture_output=True, text=True, timeout=120,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # One server span: FastAPI's own telemetry (FastAPI >= 0.16x, on once a global provider is set) stands down.
    assert result["spans"] == [["mlops_otel.fastapi", "GET /ping"]]
    assert {DURATION, ACTIVE} <= set(result["metrics"])
    assert result["after"] == (["fastapi"] if result["native"] else [])


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
    instrument_app(app, tracer_provider=_BrokenProvider(), store=MemoryStore())
    with TestClient(app) as test_client:
        assert test_client.get("/items/5").json() == {"item": 5}
        assert test_client.get("/items/6").json() == {"item": 6}
    assert trace_api.get_current_span() is trace_api.INVALID_SPAN


def test_without_an_otel_sdk_requests_still_work() -> None:
    app = make_app()
    instrument_app(app, store=MemoryStore())
    with TestClient(app) as test_client:
        assert test_client.get("/items/3").json() == {"item": 3}
        assert test_client.get("/sub/inner/y").json() == {"x": "y"}


# ----------------------------------------------------------------------------------------------- review2
def test_without_an_sdk_the_callers_baggage_alone_still_reaches_the_handler() -> None:
    # No tracer provider and no traceparent: the no-op span is invalid, yet the extracted context (baggage)
    # must be current in the handler, as with the OTel ASGI middleware (the default before #16).
    app = make_app()
    instrument_app(app, store=MemoryStore())
    with TestClient(app) as test_client:
        answer = test_client.get("/baggage", headers={"baggage": "user=ada"})
    assert answer.json() == {"user": "ada", "span_valid": False}
    assert baggage.get_baggage("user") is None  # detached after the request


def test_an_otel_instrumentation_added_after_ours_is_the_one_in_place(
        telemetry: Telemetry, caplog: pytest.LogCaptureFixture) -> None:
    # The call made last wins, as it did when "otel" was the default: OTel's layer with its hook, ours
    # standing down, and no "Skipping FastAPI instrumentation due to unexpected middleware stack" error.
    app = make_app()
    instrument_app(app, tracer_provider=telemetry.tracer_provider, store=MemoryStore())
    FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider,
                                       server_request_hook=lambda span, scope: span.set_attribute("hooked", True))
    try:
        with caplog.at_level("ERROR"), TestClient(app) as test_client:
            test_client.get("/items/1")
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
        (span,) = telemetry.server_spans()
        assert span.instrumentation_scope is not None
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.fastapi"
        assert dict(span.attributes or {})["hooked"] is True
        FastAPIInstrumentor.uninstrument_app(app)  # ours is back
        telemetry.spans.clear()
        with TestClient(app) as test_client:
            test_client.get("/items/2")
        assert [s.instrumentation_scope.name for s in telemetry.server_spans() if s.instrumentation_scope] \
            == ["mlops_otel.fastapi"]
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
        uninstrument_app(app)


def test_an_instrumented_app_mounted_in_an_instrumented_app_is_one_span_and_one_count(
        telemetry: Telemetry) -> None:
    outer, inner = FastAPI(), make_app()
    outer.mount("/api", inner)
    for app in (inner, outer):
        instrument_app(app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                       store=MemoryStore(), install_as_default=False, metrics_path=None)
    with TestClient(outer) as test_client:
        assert test_client.get("/api/items/4").json() == {"item": 4}
    assert [(s.name, s.kind) for s in telemetry.spans.get_finished_spans()] \
        == [("GET /api/items/{item_id}", SpanKind.SERVER)]
    (point,) = telemetry.points(DURATION)
    assert point.count == 1
    assert dict(point.attributes)[ROUTE] == "/api/items/{item_id}"


def test_active_requests_go_back_down_when_recording_the_duration_fails(telemetry: Telemetry) -> None:
    app = make_app()
    instrument_app(app, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider,
                   store=MemoryStore())
    with TestClient(app) as test_client:
        test_client.get("/items/1")  # builds the middleware stack
        layer = app.middleware_stack
        assert type(layer).__name__ == "HttpServerMiddleware"

        class Failing:
            def record(self, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError("exporter view broken")

        layer._duration = Failing()  # type: ignore[union-attr]
        assert test_client.get("/items/2").json() == {"item": 2}
    (active,) = telemetry.points(ACTIVE)
    assert active.value == 0


def test_a_client_without_a_port_keeps_the_span_whole(telemetry: Telemetry) -> None:
    # ASGI servers on a Unix socket may report the peer without a port: the span still gets its route/status.
    import asyncio

    from mlops_otel.fastapi._middleware import HttpServerMiddleware

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    layer = HttpServerMiddleware(endpoint, tracer_provider=telemetry.tracer_provider,
                                 meter_provider=telemetry.meter_provider)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "scheme": "http", "http_version": "1.1",
             "client": ("/run/app.sock", None), "server": None}
    asyncio.run(layer(scope, receive, send))
    (span,) = telemetry.server_spans()
    attrs = dict(span.attributes or {})
    assert attrs[STATUS] == 204
    assert attrs[semconv.ATTR_CLIENT_ADDRESS] == "/run/app.sock"
    assert semconv.ATTR_CLIENT_PORT not in attrs


def test_a_fastapi_whose_native_telemetry_cannot_be_turned_off_is_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    import importlib.util

    if importlib.util.find_spec("fastapi.telemetry") is None:  # this FastAPI has no native telemetry at all
        app = make_app()
        with caplog.at_level("WARNING", logger="mlops_otel.fastapi"):
            instrument_app(app, store=MemoryStore())
        assert not [r for r in caplog.records if "FastAPI's own HTTP telemetry" in r.getMessage()]
        return
    app = make_app()
    assert isinstance(app._native_telemetry.config, dict)  # type: ignore[attr-defined]  # where we turn it off
    app._native_telemetry = object()  # type: ignore[attr-defined]  # a FastAPI that moved it
    with caplog.at_level("WARNING", logger="mlops_otel.fastapi"):
        instrument_app(app, store=MemoryStore())
    (record,) = [r for r in caplog.records if "FastAPI's own HTTP telemetry" in r.getMessage()]
    assert "FastAPI(telemetry=" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlops_otel.fastapi"):
        instrument_app(make_app(), store=MemoryStore())  # where it is: turned off, nothing to report
    assert not [r for r in caplog.records if "FastAPI's own HTTP telemetry" in r.getMessage()]


async def _drive(middleware: HttpServerMiddleware, scope: dict[str, Any]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await middleware(scope, receive, send)


def _scope(**extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {"type": "http", "method": "GET", "scheme": "http", "path": "/x", "headers": [],
                             "http_version": "1.1", "query_string": b"", "root_path": ""}
    scope.update(extra)
    return scope


def test_no_status_code_is_invented_when_no_response_started(telemetry: Telemetry) -> None:
    import asyncio

    async def cancelled(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    middleware = HttpServerMiddleware(cancelled, tracer_provider=telemetry.tracer_provider,
                                      meter_provider=telemetry.meter_provider)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_drive(middleware, _scope()))
    (span,) = telemetry.server_spans()
    assert STATUS not in dict(span.attributes or {})  # N2: only a status that was sent
    assert dict(span.attributes or {})[ERROR_TYPE] == "CancelledError"
    assert span.status.status_code is StatusCode.ERROR
    (point,) = telemetry.points(DURATION)
    assert STATUS not in dict(point.attributes)
    assert dict(point.attributes)[ERROR_TYPE] == "CancelledError"


def test_a_failing_exclusion_check_never_fails_the_request(telemetry: Telemetry) -> None:
    import asyncio

    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])

    middleware = HttpServerMiddleware(app, tracer_provider=telemetry.tracer_provider,
                                      config=HttpServerConfig(excluded_patterns=("nothing",)))
    # A server tuple the exclusion check cannot read (no Host header): N3, the check is inside the guard.
    asyncio.run(_drive(middleware, _scope(server=("h",))))
    assert calls == ["/x"]


def test_ipv6_host_gives_the_bare_server_address(telemetry: Telemetry) -> None:
    import asyncio

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = HttpServerMiddleware(app, tracer_provider=telemetry.tracer_provider)
    asyncio.run(_drive(middleware, _scope(headers=[(b"host", b"[::1]:8000")])))
    asyncio.run(_drive(middleware, _scope(headers=[(b"host", b"[::1]")])))
    first, second = telemetry.server_spans()
    assert dict(first.attributes or {})[semconv.ATTR_SERVER_ADDRESS] == "::1"
    assert dict(first.attributes or {})[semconv.ATTR_SERVER_PORT] == 8000
    assert dict(second.attributes or {})[semconv.ATTR_SERVER_ADDRESS] == "::1"


def test_an_empty_fastapi_excluded_urls_falls_through_to_the_generic_variable() -> None:
    config = HttpServerConfig.from_env(environ={"OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "",
                                                "OTEL_PYTHON_EXCLUDED_URLS": "health"})
    assert config.excluded_patterns == ("health",)  # N5: OTel reads them with `or`


def test_under_a_local_span_without_a_remote_parent_the_span_is_internal(telemetry: Telemetry) -> None:
    import asyncio

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    middleware = HttpServerMiddleware(app, tracer_provider=telemetry.tracer_provider)
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        asyncio.run(_drive(middleware, _scope()))
    asyncio.run(_drive(middleware, _scope()))  # no local span: SERVER
    inner, _outer, alone = telemetry.spans.get_finished_spans()
    assert inner.kind is SpanKind.INTERNAL  # N7
    assert inner.parent is not None
    assert inner.parent.span_id == outer.get_span_context().span_id
    assert alone.kind is SpanKind.SERVER


# ------------------------------------------------------------------------------------------------ #16
def test_a_tracer_that_cannot_record_starts_no_span_and_the_metrics_are_the_traced_ones(
        telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SDK tracer and no caller context: the middleware skips the span (#16) and records the same
    duration and active-request points, with the same attributes, as with a recording tracer."""
    started: list[str] = []
    no_op_start = trace_api.NoOpTracer.start_span

    def counting_start(self: trace_api.NoOpTracer, name: str, *args: Any, **kwargs: Any) -> trace_api.Span:
        started.append(name)
        return no_op_start(self, name, *args, **kwargs)

    monkeypatch.setattr(trace_api.NoOpTracer, "start_span", counting_start)
    untraced = Telemetry()
    for t, provider in ((telemetry, telemetry.tracer_provider), (untraced, trace_api.NoOpTracerProvider())):
        app = make_app()
        instrument_app(app, tracer_provider=provider, meter_provider=t.meter_provider, store=MemoryStore())
        with TestClient(app, raise_server_exceptions=False) as test_client:
            for path in ("/items/1", "/v1/things/a", "/unavailable", "/boom", "/sub/inner/z"):
                test_client.get(path)
    assert started == []  # (the app's own FastAPI telemetry is off under our layer)

    def shape(t: Telemetry) -> tuple[Any, Any]:
        durations = sorted((sorted(p.attributes.items()), p.count) for p in t.points(DURATION))
        active = sorted((sorted(p.attributes.items()), p.value) for p in t.points(ACTIVE))
        return durations, active

    assert shape(untraced) == shape(telemetry)
    assert len(shape(untraced)[0]) == 5

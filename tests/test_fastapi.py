"""instrument_app / uninstrument_app on a FastAPI app, in process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import mlops_otel
from mlops_otel import Runtime
from mlops_otel.fastapi import get_runtime, instrument_app, uninstrument_app
from mlops_otel.metrics import record_gnn_metrics, track_diagnosis_request
from mlops_otel.stores import MemoryStore


@pytest.fixture(autouse=True)
def _reset_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/diagnose")
    @track_diagnosis_request("create_diagnosis")
    async def diagnose(request: Request) -> dict[str, str]:
        record_gnn_metrics("v2.1.0", 10.0, 0.3, 0.9)
        return {"runtime": type(request.app.state.mlops).__name__}

    return app


def test_lifespan_creates_installs_and_closes_the_runtime() -> None:
    app = make_app()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    instrument_app(app, tracer_provider=provider)
    with TestClient(app) as client:
        runtime = get_runtime(app)
        assert mlops_otel.default_runtime() is runtime
        assert client.get("/diagnose").json() == {"runtime": "Runtime"}
        body = client.get("/metrics").text
        assert 'diagnosis_requests_total{model_version="v2.1.0",status="success"} 1.0' in body
        assert 'gnn_confidence_count{model_version="v2.1.0"} 1.0' in body
    names = {s.name for s in spans.get_finished_spans()}
    assert "diagnosis" in names
    assert any(n.startswith("GET /diagnose") for n in names)  # HTTP server span of the OTel instrumentation
    with pytest.raises(RuntimeError, match="has not started"):
        get_runtime(app)
    assert mlops_otel.default_runtime() is not runtime


def test_instrument_is_idempotent_and_reversible() -> None:
    app = make_app()
    routes_before = list(app.router.routes)
    instrument_app(app)
    instrument_app(app)
    assert sum(getattr(r, "path", None) == "/metrics" for r in app.router.routes) == 1
    uninstrument_app(app)
    uninstrument_app(app)
    assert app.router.routes == routes_before
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    with pytest.raises(RuntimeError, match="not instrumented"):
        get_runtime(app)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 404


def test_given_runtime_is_used_and_not_closed() -> None:
    runtime = Runtime.create()
    app = FastAPI()

    @app.get("/explicit")
    def explicit(request: Request) -> None:
        get_runtime(request.app).telemetry.record_error("ValueError", "parse")

    instrument_app(app, runtime=runtime, install_as_default=False)
    with TestClient(app) as client:
        client.get("/explicit")
        assert get_runtime(app) is runtime
        assert mlops_otel.default_runtime() is not runtime
        assert 'diagnosis_errors_total{error_type="ValueError",stage="parse"} 1.0' in client.get("/metrics").text
    # Still usable after the app stopped: the caller owns it.
    runtime.telemetry.record_error("ValueError", "parse")
    assert 'stage="parse"} 2.0' in runtime.telemetry.render_prometheus().decode()


def test_a_configured_default_is_used_and_kept() -> None:
    configured = mlops_otel.configure(max_label_values=7)
    app = make_app()
    instrument_app(app)
    with TestClient(app) as client:
        assert get_runtime(app) is configured
        client.get("/diagnose")
    assert app.state.mlops is None  # the app stopped: it no longer hands out a runtime
    assert mlops_otel.default_runtime() is configured  # still the default, not closed
    assert 'status="success"' in configured.telemetry.render_prometheus().decode()


def test_metrics_app_follows_a_later_configure() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from mlops_otel.metrics import metrics_app, record_error

    app = Starlette(routes=[Mount("/metrics", app=metrics_app())])  # mounted at import, as in the seed
    configured = mlops_otel.configure()
    record_error("TimeoutError", "rag_generation")
    with TestClient(app) as client:
        assert 'diagnosis_errors_total{error_type="TimeoutError",stage="rag_generation"} 1.0' in (
            client.get("/metrics/").text)
    assert configured.telemetry is mlops_otel.default_runtime().telemetry


def test_shutdown_delivers_buffered_results_and_closes_the_store() -> None:
    class Tracked(MemoryStore):
        closed = False

        def close(self) -> None:
            Tracked.closed = True

    store = Tracked()
    app = FastAPI()

    @app.post("/result")
    def result() -> None:
        get_runtime(app).registry.update_metrics("gnn", "v1", 12.0, 0.9, error=False)  # buffered in process

    instrument_app(app, runtime_factory=lambda: Runtime.create(store=store))
    with TestClient(app) as client:
        get_runtime(app).registry.register("gnn", "v1")
        client.post("/result")
    assert Tracked.closed
    assert store.read_counters("registry:{gnn}:stats:v1")["n"] == 1.0  # flushed at shutdown, not lost


def test_bad_metrics_path_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"metrics_path must be None or a path starting with '/', got 'metrics'"):
        instrument_app(make_app(), metrics_path="metrics")

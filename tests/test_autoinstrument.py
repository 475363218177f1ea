"""Zero-code path: ``opentelemetry-instrument uvicorn app:app`` in a real subprocess."""

from __future__ import annotations

import shutil
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

from mlops_otel.autoinstrument import MlopsOtelInstrumentor

from .services import uvicorn_process


def test_entry_point_is_registered() -> None:
    eps = entry_points(group="opentelemetry_instrumentor")
    assert {ep.name: ep.value for ep in eps}["mlops_otel"] == "mlops_otel.autoinstrument:MlopsOtelInstrumentor"
    assert eps["mlops_otel"].load() is MlopsOtelInstrumentor


def test_instrumentor_is_reversible() -> None:
    from fastapi import FastAPI

    original = FastAPI.__init__
    instrumentor = MlopsOtelInstrumentor()
    instrumentor.instrument()
    try:
        assert FastAPI.__init__ is not original
        app = FastAPI()
        assert app.state._mlops_otel is not None
    finally:
        instrumentor.uninstrument()
    assert FastAPI.__init__ is original
    assert getattr(FastAPI().state, "_mlops_otel", None) is None


@pytest.mark.integration
def test_opentelemetry_instrument_gives_metrics_and_spans() -> None:
    agent = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert agent is not None, "opentelemetry-instrument is installed with the fastapi extra"
    env = {
        "OTEL_SERVICE_NAME": "zero-code-test",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "MLOPS_OTEL_STORE_URL": "memory://",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: the console exporter prints spans promptly
    }
    with uvicorn_process("tests.apps.zero_code_app:app", env=env, prefix=(agent,)) as (url, proc):
        for i in range(3):
            r = httpx.post(f"{url}/diagnosis/create", params={"equipment_id": f"pump-{i}"}, timeout=10)
            assert r.status_code == 200, r.text
        body = httpx.get(f"{url}/metrics", timeout=10).text
        log_path = Path(proc.output_path)  # type: ignore[attr-defined]  # set by uvicorn_process
        deadline = time.monotonic() + 20
        while log_path.read_text().count('"name": "POST /diagnosis/create"') < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a second HTTP layer's spans would end with the first's
    assert 'diagnosis_requests_total{model_version="v2.1.0",status="success"} 3.0' in body
    assert 'gnn_inference_duration_seconds_count{model_version="v2.1.0"} 3.0' in body
    assert 'diagnosis_duration_seconds_count{stage="gnn_inference"} 3.0' in body
    log = log_path.read_text()
    assert '"name": "diagnosis"' in log
    assert '"name": "gnn.inference"' in log
    # The HTTP server spans of OTel's FastAPI instrumentor (active here): exactly one per request, so
    # mlops-otel added no second HTTP layer.
    assert log.count('"name": "POST /diagnosis/create"') == 3
    assert '"service.name": "zero-code-test"' in log


def test_zero_code_adds_no_second_http_layer_to_an_app_otel_instruments() -> None:
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from mlops_otel.autoinstrument import http_instrumentation_from_env

    assert http_instrumentation_from_env(FastAPI(), {}) == "light"  # the default
    assert http_instrumentation_from_env(FastAPI(), {"MLOPS_OTEL_INSTRUMENT_HTTP": "none"}) is False
    for off in ("false", "0", "off", "no", "OFF"):  # N14: every "off" spelling means no HTTP layer
        assert http_instrumentation_from_env(FastAPI(), {"MLOPS_OTEL_INSTRUMENT_HTTP": off}) is False
    assert http_instrumentation_from_env(FastAPI(), {"MLOPS_OTEL_INSTRUMENT_HTTP": "bogus"}) == "light"
    # Both orders in which opentelemetry-instrument can load the two instrumentors.
    for first, second in ((FastAPIInstrumentor(), MlopsOtelInstrumentor()),
                          (MlopsOtelInstrumentor(), FastAPIInstrumentor())):
        first.instrument()
        second.instrument()
        try:
            import fastapi

            app = fastapi.FastAPI()
            assert app._is_instrumented_by_opentelemetry  # type: ignore[attr-defined]
            assert app.state._mlops_otel.http_layer is None
            assert not app.state._mlops_otel.http_instrumented
        finally:
            second.uninstrument()
            first.uninstrument()
        assert getattr(fastapi.FastAPI(), "_is_instrumented_by_opentelemetry", False) is False


@pytest.mark.integration
def test_zero_code_light_layer_joins_the_callers_trace_through_real_uvicorn() -> None:
    from .services import otlp_trace_sink, span_attributes

    agent = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert agent is not None, "opentelemetry-instrument is installed with the fastapi extra"
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with otlp_trace_sink() as sink:
        env = {
            "OTEL_SERVICE_NAME": "zero-code-light",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi",  # OTel's FastAPI instrumentor off: ours is used
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{sink.url}/v1/traces",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "MLOPS_OTEL_STORE_URL": "memory://",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with uvicorn_process("tests.apps.zero_code_app:app", env=env, prefix=(agent,)) as (url, _proc):
            r = httpx.post(f"{url}/diagnosis/create", params={"equipment_id": "pump-1"}, timeout=10,
                           headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 30
            while not any(s.name == "diagnosis" for _, s in sink.spans()) and time.monotonic() < deadline:
                time.sleep(0.1)
        spans = [s for _, s in sink.spans()]
        scopes = {s.span_id: ss.scope.name for request in sink.requests for rs in request.resource_spans
                  for ss in rs.scope_spans for s in ss.spans}
    servers = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    assert [s.name for s in servers] == ["POST /diagnosis/create"]  # one HTTP layer, named by route
    assert scopes[servers[0].span_id] == "mlops_otel.fastapi"  # ours, not FastAPI's own telemetry
    (server,) = servers
    assert server.trace_id.hex() == trace_id
    assert server.parent_span_id.hex() == parent_id
    attrs = span_attributes(server)
    assert attrs["http.route"] == "/diagnosis/create"
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.port"] == int(url.rsplit(":", 1)[1])
    diagnosis = [s for s in spans if s.name == "diagnosis"]
    assert [(s.trace_id.hex(), s.parent_span_id) for s in diagnosis] == [(trace_id, server.span_id)]

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
        while '"name": "POST /diagnosis/create"' not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert 'diagnosis_requests_total{model_version="v2.1.0",status="success"} 3.0' in body
    assert 'gnn_inference_duration_seconds_count{model_version="v2.1.0"} 3.0' in body
    assert 'diagnosis_duration_seconds_count{stage="gnn_inference"} 3.0' in body
    log = log_path.read_text()
    assert '"name": "diagnosis"' in log
    assert '"name": "gnn.inference"' in log
    assert '"name": "POST /diagnosis/create"' in log  # the HTTP server span of the FastAPI instrumentation
    assert '"service.name": "zero-code-test"' in log

"""#11 item 4: the management API under hostile requests, odd values and every state (schemathesis)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from mlops_otel import Runtime
from mlops_otel.ab import ABTestConfig, RolloutManager, RolloutSchedule
from mlops_otel.fastapi import instrument_app
from mlops_otel.fastapi._management import DEFAULT_MAX_BODY_BYTES, management_router
from mlops_otel.stores import MemoryStore
from mlops_otel.validation import InvalidValueError

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def build(state: str) -> tuple[FastAPI, Runtime]:
    """An app with only the management API, over a runtime in the *state* empty, partial or full."""
    runtime = Runtime.create(store=MemoryStore(), fleet_metrics=False)
    if state in ("partial", "full"):
        runtime.registry.register("gnn", "v1")
        runtime.registry.register("gnn", "v2")
        runtime.drift.get_detector("gnn", "v1")  # a detector before any traffic
    if state == "full":
        rng = np.random.default_rng(3)
        runtime.ab.start_test(ABTestConfig(name="t1", model_type="gnn", control_version="v1",
                                           treatment_version="v2", min_samples=10))
        for variant in ("control", "treatment"):
            for _ in range(50):
                runtime.ab.record_result("t1", variant, float(rng.normal(20, 2)), float(rng.uniform(0.6, 1.0)),
                                         False)
        # A progressive rollout (#14) on another model type, so its views render in the full state too.
        runtime.registry.register("lstm", "v1")
        runtime.registry.register("lstm", "v2")
        RolloutManager(runtime.ab).start(ABTestConfig(name="r1", model_type="lstm", control_version="v1",
                                                      treatment_version="v2", min_samples=10),
                                         RolloutSchedule.of((5.0, 50.0), min_results=20))
        detector = runtime.drift.get_detector("gnn", "v2")
        detector.set_reference(anomaly_scores=rng.beta(6, 14, 500), confidences=rng.beta(18, 2, 500))
        detector.add_production_samples(rng.beta(6, 14, 300), rng.beta(18, 2, 300))
    app = FastAPI(title="management")
    app.include_router(management_router(lambda: runtime, token=TOKEN), prefix="/mlops")
    return app, runtime


@pytest.fixture(params=["empty", "partial", "full"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    app, runtime = build(request.param)
    with TestClient(app) as client:
        yield client
    runtime.close()


# --------------------------------------------------------------- every read, every state
def test_every_read_renders_in_every_state(client: TestClient) -> None:
    """0.1: GET /mlops/drift answered 500 before traffic (time_span_seconds null vs float)."""
    for path in ("/mlops/registry", "/mlops/registry/gnn/versions", "/mlops/registry/gnn/history",
                 "/mlops/ab/tests", "/mlops/ab/tests/t1", "/mlops/drift", "/mlops/drift/gnn/v1",
                 "/mlops/drift/gnn/v2", "/mlops/ab/tests/r1/rollout", "/mlops/ab/tests/t1/rollout"):
        response = client.get(path)
        assert response.status_code in (200, 404), (path, response.text)  # FastAPI validated the model


# --------------------------------------------------------------- auth before the body
def test_auth_is_checked_before_the_body_is_read() -> None:
    """0.1: a garbage body without a token got 422; a 200 MB unauthenticated body was read and parsed."""
    app, runtime = build("empty")
    with TestClient(app) as client:
        assert client.post("/mlops/registry/gnn/versions", content=b"{garbage").status_code == 401
        assert client.post("/mlops/registry/gnn/versions", content=b"{garbage",
                           headers={"Authorization": "Bearer nope"}).status_code == 403

        def huge() -> Iterator[bytes]:  # streamed without Content-Length (chunked)
            for _ in range(1_000):
                yield b"x" * 1024

        assert client.post("/mlops/registry/gnn/versions", content=huge()).status_code == 401
        big = b'{"version": "v1", "metadata": {"blob": "' + b"x" * (DEFAULT_MAX_BODY_BYTES + 1) + b'"}}'
        assert client.post("/mlops/registry/gnn/versions", content=big).status_code == 401
        assert client.post("/mlops/registry/gnn/versions", content=big, headers=AUTH).status_code == 413
        assert client.post("/mlops/registry/gnn/versions", content=huge(), headers=AUTH).status_code == 413
        assert client.post("/mlops/registry/gnn/versions", json={"version": "v1"}, headers=AUTH).status_code == 201
    runtime.close()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_get_422_naming_the_field(number: str) -> None:
    """0.1: NaN/Infinity/1e999 in a JSON body gave 500 (the error echoed NaN; rendering failed)."""
    app, runtime = build("partial")
    with TestClient(app) as client:
        body = ('{"name": "t", "model_type": "gnn", "control_version": "v1", "treatment_version": "v2", '
                f'"treatment_traffic_pct": {number}}}')
        response = client.post("/mlops/ab/tests", content=body, headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail[0]["loc"] == ["body", "treatment_traffic_pct"]
        assert "treatment_traffic_pct must be a finite number" in detail[0]["msg"]
        nested = f'{{"version": "v9", "metadata": {{"run": {{"loss": [1.0, {number}]}}}}}}'
        response = client.post("/mlops/registry/gnn/versions", content=nested,
                               headers={**AUTH, "Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "metadata", "run", "loss", 1]
        assert runtime.ab.list_tests() == []
        assert [v.version for v in runtime.registry.list_versions("gnn")] == ["v1", "v2"]
    runtime.close()


# --------------------------------------------------------------- reads create nothing
def test_anonymous_reads_never_create_state() -> None:
    """0.1: each anonymous GET /registry/<random>/versions added a permanent entry (+16.6 MiB / 15,000)."""
    app, runtime = build("partial")
    store = runtime.store
    with TestClient(app) as client:
        client.get("/mlops/registry/gnn/versions")
        before_keys = store.list_keys("")
        before_registry = len(runtime.registry._gauge_champion), len(runtime.registry._stats_keys)
        names = [uuid.uuid4().hex for _ in range(300)]
        for name in names:
            for path in (f"/mlops/registry/{name}/versions", f"/mlops/registry/{name}/history",
                         f"/mlops/ab/tests/{name}", f"/mlops/drift/{name}/v1"):
                assert client.get(path).status_code in (200, 404)
        keys = store.list_keys("")
        assert not [k for k in keys if any(name in k for name in names)]
        assert set(before_keys) <= set(keys)  # (the detector's own background writes may add its history)
        exposition = runtime.telemetry.render_prometheus().decode()
        assert not [name for name in names if name in exposition]
        assert (len(runtime.registry._gauge_champion), len(runtime.registry._stats_keys)) == before_registry
        assert sorted(runtime.drift.detectors()) == ["gnn:v1"]
    runtime.close()


# --------------------------------------------------------------- tokens
@pytest.mark.parametrize("token", ["sécret", "two words", "line\nbreak", "tab\there"])
def test_a_token_no_header_can_carry_is_a_startup_error(token: str) -> None:
    """0.1: a non-ASCII token could never authenticate and nothing said so."""
    with pytest.raises(InvalidValueError, match="visible ASCII") as info:
        management_router(Runtime.create, token=token)
    assert info.value.field == "token"
    assert token not in str(info.value)  # a secret is never echoed
    app = FastAPI()
    with pytest.raises(ValueError, match="visible ASCII"):
        instrument_app(app, management=True, management_token=token, instrument_http=False)


def test_token_is_compared_as_the_bytes_sent() -> None:
    app, runtime = build("empty")
    with TestClient(app) as client:
        # A header byte beyond ASCII (sent raw as latin-1) never matches and never errors.
        response = client.post("/mlops/registry/gnn/versions", json={"version": "v1"},
                               headers={"Authorization": b"Bearer s3cr\xe9t"})  # type: ignore[dict-item]
        assert response.status_code == 403
        assert client.post("/mlops/registry/gnn/versions", json={"version": "v1"},
                           headers={"Authorization": "bearer " + TOKEN}).status_code == 201
    runtime.close()


# --------------------------------------------------------------- schemathesis
def _schema(state: str) -> schemathesis.schemas.BaseSchema:
    app, _runtime = build(state)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


_CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck))

empty_schema = _schema("empty")
partial_schema = _schema("partial")
full_schema = _schema("full")


@empty_schema.parametrize()
@_SETTINGS
def test_schemathesis_empty_state(case: schemathesis.Case) -> None:
    """No 5xx and every response matches its documented schema, with and without the token."""
    case.call_and_validate(headers=AUTH, checks=_CHECKS)


@partial_schema.parametrize()
@_SETTINGS
def test_schemathesis_partial_state(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, checks=_CHECKS)


@full_schema.parametrize()
@_SETTINGS
def test_schemathesis_full_state(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=AUTH, checks=_CHECKS)


def test_openapi_documents_the_limits() -> None:
    app, runtime = build("empty")
    spec = app.openapi()
    post = spec["paths"]["/mlops/registry/{model_type}/versions"]["post"]
    assert {"401", "403", "413", "422"} <= set(post["responses"])
    assert json.dumps(spec)  # renders
    runtime.close()


# --------------------------------------------------------------- real uvicorn, raw socket
@pytest.fixture
def served() -> Iterator[int]:
    import socket
    import threading
    import time

    import uvicorn

    app, runtime = build("empty")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60.0
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped before it started serving"
        if time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("uvicorn did not start within 60 s")
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(timeout=30)
    runtime.close()


def _answer_before_body(port: int, headers: str) -> str:
    """Send a 200 MB write's headers and 64 KiB of its body; return the status line the server answers."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall((f"POST /mlops/registry/gnn/versions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {200 * 1024 * 1024}\r\n{headers}\r\n").encode())
        sock.sendall(b"x" * 65_536)
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()  # 0.1 waited for all 200 MB here


def test_a_200_mb_body_is_answered_without_being_read(served: int) -> None:
    """0.1: a 200 MB unauthenticated body was read and parsed before the 401 (10 s, +600 MiB RSS)."""
    assert _answer_before_body(served, "") == "HTTP/1.1 401 Unauthorized"
    assert _answer_before_body(served, "Authorization: Bearer nope\r\n") == "HTTP/1.1 403 Forbidden"
    assert _answer_before_body(served, f"Authorization: Bearer {TOKEN}\r\n") == "HTTP/1.1 413 Request Entity Too Large"

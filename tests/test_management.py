"""The management API on an instrumented app: auth, domain errors, success paths, OpenAPI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

import mlops_otel
from mlops_otel import Runtime
from mlops_otel._views import Operations
from mlops_otel.fastapi import get_runtime, instrument_app
from mlops_otel.fastapi._management import DISABLED_MESSAGE, MISSING_MESSAGE, WRONG_MESSAGE, management_router
from mlops_otel.fastapi._models import (
    ABTestChangeOut,
    ABTestOut,
    ChampionChangeOut,
    DriftReportOut,
    EvaluationOut,
    ModelTypeOut,
    ModelVersionOut,
    RoleChangeOut,
)

from .services import free_port

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "/mlops"


@pytest.fixture(autouse=True)
def _reset_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


def make_app(token: str | None = TOKEN) -> FastAPI:
    app = FastAPI(title="service")
    instrument_app(app, management=True, management_token=token, instrument_http=False)
    return app


@pytest.fixture
def app() -> FastAPI:
    return make_app()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


@pytest.fixture
def runtime(app: FastAPI, client: TestClient) -> Runtime:
    return get_runtime(app)


def register(client: TestClient, *versions: str, model_type: str = "gnn") -> None:
    for version in versions:
        response = client.post(f"{PREFIX}/registry/{model_type}/versions", json={"version": version}, headers=AUTH)
        assert response.status_code == 201, response.text


def start(client: TestClient, **overrides: Any) -> Any:
    body = {"name": "gnn_v2.2_test", "model_type": "gnn", "control_version": "v2.1.0",
            "treatment_version": "v2.2.0", **overrides}
    return client.post(f"{PREFIX}/ab/tests", json=body, headers=AUTH)


def record(runtime: Runtime, test: str, *, control: float, treatment: float, n: int = 200) -> None:
    """*n* results per variant with the given mean confidences (latency alike, no errors)."""
    rng = np.random.default_rng(7)
    for variant, mean in (("control", control), ("treatment", treatment)):
        for conf, latency in zip(rng.normal(mean, 0.05, n).clip(0, 1), rng.normal(20.0, 2.0, n), strict=True):
            runtime.ab.record_result(test, variant, float(latency), float(conf), False)


def write_paths(app: FastAPI) -> list[str]:
    """Every POST path of the management API, as OpenAPI lists them."""
    return [path for path, ops in app.openapi()["paths"].items() if path.startswith(PREFIX) and "post" in ops]


def concrete(path: str) -> str:
    return path.replace("{name}", "gnn_v2.2_test").replace("{model_type}", "gnn").replace("{version}", "v1")


# ----------------------------------------------------------------------- auth
def test_every_write_endpoint_needs_the_bearer_token(app: FastAPI, client: TestClient) -> None:
    paths = write_paths(app)
    assert len(paths) == 8  # 7 + the rollout check (#14)
    for template in paths:
        path = concrete(template)
        missing = client.post(path, json={})
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"detail": MISSING_MESSAGE}
        for header in ("Basic czNjcmV0", "Bearer", "s3cret"):
            malformed = client.post(path, json={}, headers={"Authorization": header})
            assert malformed.status_code == 401, (path, header)
        wrong = client.post(path, json={}, headers={"Authorization": "Bearer s3cret-not"})
        assert wrong.status_code == 403, path
        assert wrong.json() == {"detail": WRONG_MESSAGE}
    assert client.get(f"{PREFIX}/registry").json() == []  # nothing was written


def test_writes_are_disabled_without_a_configured_token() -> None:
    app = make_app(token=None)
    with TestClient(app) as client:
        for path in write_paths(app):
            for headers in ({}, AUTH, {"Authorization": "Bearer "}):
                response = client.post(concrete(path), json={"version": "v1"}, headers=headers)
                assert response.status_code == 403, path
                assert response.json() == {"detail": DISABLED_MESSAGE}
        assert client.get(f"{PREFIX}/registry").status_code == 200  # reads stay open
        assert get_runtime(app).registry.model_types() == []


def test_reads_are_open(client: TestClient, runtime: Runtime) -> None:
    runtime.registry.register("gnn", "v1")
    assert client.get(f"{PREFIX}/registry").json() == [
        {"model_type": "gnn", "champion": "v1", "challenger": None, "versions": 1}]
    assert client.get(f"{PREFIX}/registry/gnn/versions").status_code == 200
    assert client.get(f"{PREFIX}/registry/gnn/history").status_code == 200
    assert client.get(f"{PREFIX}/ab/tests").json() == []
    assert client.get(f"{PREFIX}/drift").status_code == 200


def test_an_empty_token_is_rejected_at_configuration() -> None:
    with pytest.raises(ValueError, match="token must be a non-empty string or None, got ''"):
        management_router(Runtime.create, token="")


# ------------------------------------------------------------------- registry
def test_registry_flow(client: TestClient, runtime: Runtime) -> None:
    first = client.post(f"{PREFIX}/registry/gnn/versions", json={"version": "v2.1.0", "metadata": {"run": 41}},
                        headers=AUTH)
    assert first.status_code == 201
    assert first.json()["role"] == "champion"
    assert first.json()["metadata"] == {"run": 41}
    register(client, "v2.2.0")
    runtime.registry.update_metrics("gnn", "v2.1.0", 40.0, 0.9, False)
    runtime.registry.update_metrics("gnn", "v2.1.0", 60.0, 0.7, True)

    versions = client.get(f"{PREFIX}/registry/gnn/versions").json()
    assert [(v["version"], v["role"]) for v in versions] == [("v2.1.0", "champion"), ("v2.2.0", "candidate")]
    assert versions[0]["metrics"]["count"] == 2
    assert versions[0]["metrics"]["error_rate"] == 0.5
    assert versions[0]["metrics"]["latency_mean_ms"] == 50.0
    assert versions[1]["metrics"] == {"count": 0, "error_rate": None, "latency_mean_ms": None,
                                      "latency_variance": None, "confidence_mean": None,
                                      "confidence_variance": None}

    promoted = client.post(f"{PREFIX}/registry/gnn/promote", json={"version": "v2.2.0", "reason": "better"},
                           headers=AUTH)
    assert promoted.status_code == 200
    assert promoted.json()["changed"] is True
    assert promoted.json()["champion"]["version"] == "v2.2.0"
    again = client.post(f"{PREFIX}/registry/gnn/promote", json={"version": "v2.2.0", "reason": "again"},
                        headers=AUTH)
    assert again.json()["changed"] is False
    assert client.get(f"{PREFIX}/registry").json() == [
        {"model_type": "gnn", "champion": "v2.2.0", "challenger": None, "versions": 2}]

    rolled = client.post(f"{PREFIX}/registry/gnn/rollback", json={"reason": "latency"}, headers=AUTH)
    assert rolled.status_code == 200
    assert rolled.json()["champion"]["version"] == "v2.1.0"
    history = client.get(f"{PREFIX}/registry/gnn/history").json()
    assert [(h["action"], h["version"], h["reason"]) for h in history][-2:] == [
        ("promote", "v2.2.0", "better"), ("rollback", "v2.1.0", "latency")]
    assert history[-1]["previous_champion"] == "v2.2.0"


def test_registry_errors(client: TestClient) -> None:
    register(client, "v1")
    duplicate = client.post(f"{PREFIX}/registry/gnn/versions", json={"version": "v1"}, headers=AUTH)
    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": "version 'v1' of model type 'gnn' is already registered"}

    bad = client.post(f"{PREFIX}/registry/gnn/versions", json={"version": "v{1}"}, headers=AUTH)
    assert bad.status_code == 422
    assert bad.json()["detail"] == [{
        "loc": ["body", "version"], "type": "value_error", "input": "v{1}",
        "msg": "version must be a non-empty string without braces or control characters, got 'v{1}'"}]

    unknown = client.post(f"{PREFIX}/registry/gnn/promote", json={"version": "v9", "reason": "r"}, headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "version 'v9' of model type 'gnn' is not registered (registered: v1)"}

    nothing = client.post(f"{PREFIX}/registry/gnn/rollback", json={"reason": "r"}, headers=AUTH)
    assert nothing.status_code == 409
    assert nothing.json() == {"detail": "model type 'gnn' has no previous champion to roll back to"}

    for method, path, body in (("GET", "/registry/bert/versions", None), ("GET", "/registry/bert/history", None),
                               ("POST", "/registry/bert/rollback", {"reason": "r"})):
        response = client.request(method, PREFIX + path, json=body, headers=AUTH)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "model type 'bert' has no registered versions"}

    missing_reason = client.post(f"{PREFIX}/registry/gnn/promote", json={"version": "v1"}, headers=AUTH)
    assert missing_reason.status_code == 422
    assert missing_reason.json()["detail"][0]["loc"] == ["body", "reason"]


def test_archived_version_cannot_be_promoted(client: TestClient, runtime: Runtime) -> None:
    register(client, "v1", "v2")
    runtime.registry.archive("gnn", "v2")
    response = client.post(f"{PREFIX}/registry/gnn/promote", json={"version": "v2", "reason": "r"}, headers=AUTH)
    assert response.status_code == 409
    assert response.json() == {"detail": "version 'v2' of model type 'gnn' is archived and cannot be promoted"}


# ------------------------------------------------------------------ A/B tests
def test_ab_flow_start_evaluate_finalize(client: TestClient, runtime: Runtime) -> None:
    register(client, "v2.1.0", "v2.2.0")
    started = start(client, treatment_traffic_pct=50, min_samples=50,
                    guardrails={"max_latency_increase_pct": 20, "max_error_rate_increase": 0.05})
    assert started.status_code == 201, started.text
    test = started.json()
    assert test["state"] == "active"
    assert test["config"]["treatment_traffic_pct"] == 50.0
    assert test["config"]["guardrails"]["max_latency_increase_pct"] == 20.0
    assert test["config"]["salt"] == "gnn_v2.2_test"
    assert test["ends_at"] - test["started_at"] == pytest.approx(7 * 86_400)
    assert client.get(f"{PREFIX}/ab/tests").json() == [test]
    assert client.get(f"{PREFIX}/ab/tests/gnn_v2.2_test").json() == test
    assert client.get(f"{PREFIX}/registry").json()[0]["challenger"] == "v2.2.0"

    record(runtime, "gnn_v2.2_test", control=0.5, treatment=0.9)
    evaluation = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/evaluate", headers=AUTH)
    assert evaluation.status_code == 200
    body = evaluation.json()
    assert body["decision"] == "promote"
    assert (body["n_control"], body["n_treatment"]) == (200, 200)
    assert body["effects"]["confidence"]["verdict"] == "better"
    assert body["recommendation"].startswith("Promote v2.2.0 to champion")

    finalized = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/finalize", json={"action": "promote"}, headers=AUTH)
    assert finalized.status_code == 200
    assert finalized.json()["changed"] is True
    assert finalized.json()["test"]["state"] == "promoted"
    assert runtime.registry.champion_version("gnn") == "v2.2.0"

    again = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/finalize", json={"action": "rollback"}, headers=AUTH)
    assert again.status_code == 409
    assert again.json()["detail"].startswith("A/B test 'gnn_v2.2_test' is already promoted")
    abort = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/abort", headers=AUTH)
    assert abort.status_code == 409
    assert runtime.registry.champion_version("gnn") == "v2.2.0"


def test_abort_keeps_the_champion(client: TestClient, runtime: Runtime) -> None:
    register(client, "v2.1.0", "v2.2.0")
    assert start(client).status_code == 201
    aborted = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/abort", json={"reason": "wrong model"}, headers=AUTH)
    assert aborted.status_code == 200
    assert aborted.json()["changed"] is True
    assert aborted.json()["test"]["state"] == "aborted"
    assert aborted.json()["test"]["reason"] == "wrong model"
    assert runtime.registry.champion_version("gnn") == "v2.1.0"
    assert runtime.registry.get_challenger("gnn") is None
    # The model type is free again.
    assert start(client, name="second").status_code == 201


def test_ab_config_errors_name_field_expectation_and_value(client: TestClient) -> None:
    register(client, "v2.1.0", "v2.2.0")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"treatment_traffic_pct": 120}, "treatment_traffic_pct",
         "treatment_traffic_pct must be a finite number in (0, 100), got 120.0"),
        ({"treatment_version": "v2.1.0"}, "treatment_version",
         "treatment_version must be different from control_version, got 'v2.1.0'"),
        ({"control_version": "v0"}, "control_version",
         "control_version must be a version registered for model type 'gnn' (registered: v2.1.0, v2.2.0), "
         "got 'v0'"),
        ({"name": " "}, "name", "name must be a non-empty string without braces or control characters, got ' '"),
        ({"duration_days": 0}, "duration_days", "duration_days must be a finite number in (0, 3650], got 0.0"),
    ]
    for overrides, field, message in cases:
        response = start(client, **overrides)
        assert response.status_code == 422, overrides
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body", field]
        assert error["msg"] == message
    # Shape errors are pydantic's, in the same format.
    typed = start(client, treatment_traffic_pct="lots", colour="blue")
    assert typed.status_code == 422
    assert {tuple(e["loc"]) for e in typed.json()["detail"]} == {("body", "treatment_traffic_pct"),
                                                                ("body", "colour")}
    assert client.get(f"{PREFIX}/ab/tests").json() == []


def test_ab_conflicts_and_unknown_tests(client: TestClient) -> None:
    register(client, "v2.1.0", "v2.2.0", "v2.3.0")
    assert start(client).status_code == 201
    second = start(client, name="other", treatment_version="v2.3.0")
    assert second.status_code == 409
    assert second.json()["detail"] == ("model type 'gnn' already has an active A/B test 'gnn_v2.2_test'; "
                                       "finalize or abort it first")
    assert client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/abort", headers=AUTH).status_code == 200
    reused = start(client)
    assert reused.status_code == 409
    assert reused.json()["detail"] == "an A/B test named 'gnn_v2.2_test' already exists; choose another name"

    for method, path, body in (("GET", "/ab/tests/nope", None), ("POST", "/ab/tests/nope/evaluate", None),
                               ("POST", "/ab/tests/nope/finalize", {"action": "promote"}),
                               ("POST", "/ab/tests/nope/abort", None)):
        response = client.request(method, PREFIX + path, json=body, headers=AUTH)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "no A/B test named 'nope'"}
    bad_action = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/finalize", json={"action": "ship"}, headers=AUTH)
    assert bad_action.status_code == 422
    assert bad_action.json()["detail"][0]["loc"] == ["body", "action"]


# ---------------------------------------------------------------------- drift
def feed_drift(runtime: Runtime, version: str, *, shift: float, n: int = 1000) -> None:
    rng = np.random.default_rng(3)
    detector = runtime.drift.get_detector("gnn", version)
    detector.set_reference(anomaly_scores=rng.beta(6, 14, 1000), confidences=rng.beta(18, 2, 1000))
    detector.add_production_samples(np.clip(rng.beta(6, 14, n) + shift, 0, 1), rng.beta(18, 2, n))


def test_drift_reports(client: TestClient, runtime: Runtime) -> None:
    assert client.get(f"{PREFIX}/drift").json() == []
    feed_drift(runtime, "v2.2.0", shift=0.3)
    feed_drift(runtime, "v2.1.0", shift=0.0)
    feed_drift(runtime, "v2.3.0", shift=0.0, n=10)
    reports = client.get(f"{PREFIX}/drift").json()
    assert [(r["key"], r["level"], r["alert_triggered"]) for r in reports] == [
        ("gnn:v2.1.0", "ok", False), ("gnn:v2.2.0", "alert", True), ("gnn:v2.3.0", "insufficient_data", False)]
    drifted = reports[1]
    assert drifted["current_drift_score"] == drifted["ks_statistic"]["anomaly_score"] > 0.3
    assert drifted["recommendation"].startswith("Output distribution shifted: anomaly_score")
    assert (drifted["model_type"], drifted["version"], drifted["threshold"]) == ("gnn", "v2.2.0", 0.3)
    assert drifted["production_samples"] == 1000
    one = client.get(f"{PREFIX}/drift/gnn/v2.2.0").json()
    assert {k: v for k, v in one.items() if k != "evaluated_at"} == {
        k: v for k, v in drifted.items() if k != "evaluated_at"}
    missing = client.get(f"{PREFIX}/drift/gnn/v9")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no drift detector for version 'v9' of model type 'gnn'"}
    assert all(set(r) == fields(DriftReportOut) for r in reports)
    output_model = DriftReportOut.model_fields["outputs"].annotation.__args__[1]  # type: ignore[union-attr]
    assert all(set(o) == fields(output_model) for r in reports for o in r["outputs"].values())


# ------------------------------------------------------------------ failures
def test_not_started_and_unreachable_store_answer_503() -> None:
    def not_started() -> Runtime:
        raise RuntimeError("app has not started")

    app = FastAPI()
    app.include_router(management_router(not_started, token=TOKEN))
    with TestClient(app) as client:
        response = client.get("/registry")
        assert response.status_code == 503
        assert response.json() == {"detail": "app has not started"}

    runtime = Runtime.create(store=f"redis://127.0.0.1:{free_port()}/0", fleet_metrics=False)
    app = FastAPI()
    instrument_app(app, runtime=runtime, management=True, management_token=TOKEN, instrument_http=False)
    try:
        with TestClient(app) as client:
            for method, path in (("GET", "/registry"), ("GET", "/ab/tests"), ("POST", "/registry/gnn/rollback")):
                response = client.request(method, PREFIX + path, json={"reason": "r"}, headers=AUTH)
                assert response.status_code == 503, path
                assert response.json()["detail"].startswith("the state store is unavailable: ")
    finally:
        runtime.close()


# -------------------------------------------------------------------- OpenAPI
def test_openapi_documents_endpoints_schemas_tags_and_auth(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    expected = {
        ("/ab/tests", "post"): ("ab-tests", "ABTestConfigIn", "ABTestOut"),
        ("/ab/tests", "get"): ("ab-tests", None, "ABTestOut"),
        ("/ab/tests/{name}", "get"): ("ab-tests", None, "ABTestOut"),
        ("/ab/tests/{name}/evaluate", "post"): ("ab-tests", None, "EvaluationOut"),
        ("/ab/tests/{name}/finalize", "post"): ("ab-tests", "FinalizeIn", "ABTestChangeOut"),
        ("/ab/tests/{name}/abort", "post"): ("ab-tests", "AbortIn", "ABTestChangeOut"),
        ("/ab/tests/{name}/rollout", "get"): ("ab-tests", None, "RolloutOut"),
        ("/ab/tests/{name}/rollout/check", "post"): ("ab-tests", None, "RolloutOut"),
        ("/registry", "get"): ("registry", None, "ModelTypeOut"),
        ("/registry/{model_type}/versions", "get"): ("registry", None, "ModelVersionOut"),
        ("/registry/{model_type}/versions", "post"): ("registry", "RegisterIn", "ModelVersionOut"),
        ("/registry/{model_type}/promote", "post"): ("registry", "PromoteIn", "ChampionChangeOut"),
        ("/registry/{model_type}/rollback", "post"): ("registry", "RollbackIn", "ChampionChangeOut"),
        ("/registry/{model_type}/history", "get"): ("registry", None, "RoleChangeOut"),
        ("/drift", "get"): ("drift", None, "DriftReportOut"),
        ("/drift/{model_type}/{version}", "get"): ("drift", None, "DriftReportOut"),
    }
    documented = {(p[len(PREFIX):], m) for p, ops in paths.items() if p.startswith(PREFIX) for m in ops}
    assert documented == set(expected)
    for (path, method), (tag, request, response) in expected.items():
        op = paths[PREFIX + path][method]
        assert op["tags"] == [tag]
        ok = next(code for code in op["responses"] if code.startswith("2"))
        assert response in str(op["responses"][ok]["content"]["application/json"]["schema"])
        if request is not None:
            assert request in str(op["requestBody"]["content"]["application/json"]["schema"])
        if method == "post":
            assert op["security"] == [{"ManagementToken": []}]
            assert {"401", "403"} <= set(op["responses"])
        else:
            assert "security" not in op
    schemas = doc["components"]["schemas"]
    assert doc["components"]["securitySchemes"]["ManagementToken"] == {
        "type": "http", "scheme": "bearer", "description": "The management token configured on the service."}
    config = schemas["ABTestConfigIn"]
    assert set(config["required"]) == {"name", "model_type", "control_version", "treatment_version"}
    assert config["properties"]["treatment_traffic_pct"]["default"] == 10.0
    assert config["properties"]["duration_days"]["default"] == 7.0
    assert schemas["FinalizeIn"]["properties"]["action"]["enum"] == ["promote", "rollback"]
    drift = schemas["DriftReportOut"]
    assert {"current_drift_score", "alert_triggered", "recommendation", "level", "outputs"} <= set(drift["required"])


# ---------------------------------------------------------------------- views
def fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def test_views_have_exactly_the_documented_fields(runtime: Runtime) -> None:
    """FastAPI drops keys a response model lacks, so compare the views themselves with the models."""
    ops = Operations(runtime)
    ops.register("gnn", "v1")
    ops.register("gnn", "v2")
    test = ops.start_test({"name": "t", "model_type": "gnn", "control_version": "v1", "treatment_version": "v2"})
    assert set(test) == fields(ABTestOut)
    assert set(test["config"]) == fields(ABTestOut.model_fields["config"].annotation)  # type: ignore[arg-type]
    evaluation = ops.evaluate_test("t")
    assert set(evaluation) == fields(EvaluationOut)
    effect_model = EvaluationOut.model_fields["effects"].annotation.__args__[1]  # type: ignore[union-attr]
    assert all(set(e) == fields(effect_model) for e in evaluation["effects"].values())
    assert set(ops.abort_test("t")) == fields(ABTestChangeOut)
    (version, _) = ops.list_versions("gnn")
    assert set(version) == fields(ModelVersionOut)
    assert set(version["metrics"]) == fields(ModelVersionOut.model_fields["metrics"].annotation)  # type: ignore[arg-type]
    assert set(ops.promote("gnn", "v2", "r")) == fields(ChampionChangeOut)
    assert set(ops.rollback("gnn", "r")) == fields(ChampionChangeOut)
    assert all(set(h) == fields(RoleChangeOut) for h in ops.history("gnn"))
    assert all(set(t) == fields(ModelTypeOut) for t in ops.model_types())

"""Load test: several uvicorn workers on one Redis store; counts add up exactly afterwards.

Loopback only, bounded in requests and time. The latency report (with and without the SDK)
is produced by benchmarks/bench_e2e.py from the same load generator.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._load import run_load
from examples.diagnosis_service.app import MODEL_TYPE, DiagnosisService, setup_models
from mlops_otel import Runtime
from mlops_otel.ab import ABTestConfig
from mlops_otel.stores import make_key
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import snapshot_from_json

from .services import RedisServer, uvicorn_process

pytestmark = pytest.mark.integration

REQUESTS = 600
WORKERS = 2


def _requests_total(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "diagnosis_requests_total":
                totals[s.labels["status"]] = totals.get(s.labels["status"], 0.0) + s.value
    return totals


def _eventually(check: object, timeout: float = 30.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)


def _fleet_docs(store: RedisStore) -> dict[str, tuple[int, float]]:
    """Each worker's fleet document: its version and its diagnosis_requests total."""
    docs: dict[str, tuple[int, float]] = {}
    for key in store.list_keys(make_key("telemetry", "fleet", "")):
        found = store.get_document(key)
        assert found is not None
        assert isinstance(found.value, dict)
        families = snapshot_from_json(found.value["families"])
        docs[key] = (found.version, sum(s.value for f in families if f.spec.name == "diagnosis_requests"
                                        for s in f.series))
    return docs


def _wait_until_every_worker_has_the_fleet(redis_url: str, prefix: str, total: float) -> None:
    """Wait (on the store, not on scrapes) until every worker serves the final fleet view.

    Six agreeing scrapes in a row do not show that: the kernel may hand them all to one worker
    (seen: 9 in a row) while another worker's view is still older than the first one's last
    publish. A worker's refresh publishes, then fetches; so once the published documents add
    up to *total*, two more publishes of every worker mean each has fetched them since.
    """
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        deadline = time.monotonic() + 60
        while sum(n for _, n in _fleet_docs(store).values()) != total:
            assert time.monotonic() < deadline, _fleet_docs(store)
            time.sleep(0.25)
        final = {key: version for key, (version, _) in _fleet_docs(store).items()}
        while any(_fleet_docs(store)[key][0] < version + 2 for key, version in final.items()):
            assert time.monotonic() < deadline, (final, _fleet_docs(store))
            time.sleep(0.25)
    finally:
        store.close()


def test_counts_are_exact_across_workers(redis_service: RedisServer) -> None:
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    setup = Runtime.create(store=redis_service.url, store_prefix=prefix, fleet_metrics=False)
    try:
        setup_models(setup, DiagnosisService())
        setup.ab.start_test(ABTestConfig(name="load_test", model_type=MODEL_TYPE, control_version="v2.1.0",
                                         treatment_version="v2.2.0", treatment_traffic_pct=50))
    finally:
        setup.close()
    env = {"MLOPS_OTEL_STORE_URL": redis_service.url, "MLOPS_OTEL_STORE_PREFIX": prefix}
    with uvicorn_process("examples.diagnosis_service.app:app", env=env, workers=WORKERS) as (url, _proc):
        result = run_load(url, requests=REQUESTS, concurrency=16, max_seconds=240)
        assert result.sent == REQUESTS
        assert set(result.statuses) <= {200, 503}
        failed = result.statuses.get(503, 0)  # the example GNN's simulated failures: ~3% (v2.1.0), ~1% (v2.2.0)
        assert failed < REQUESTS * 0.08

        # /metrics of whichever worker answers shows the fleet's totals (FleetMetrics over Redis).
        expected = {"success": float(REQUESTS - failed)}
        if failed:
            expected["error"] = float(failed)
        # Other workers' counts reach a worker's view with its next refresh: wait until every
        # worker has fetched every final document, then any worker that answers is exact.
        _wait_until_every_worker_has_the_fleet(redis_service.url, prefix, float(REQUESTS))
        for _ in range(12):
            assert _requests_total(url) == expected

        # Every request was in the A/B test (50/50, every request has a user id): one result each.
        evaluation: dict[str, object] = {}

        def ab_complete() -> bool:
            nonlocal evaluation
            rt = Runtime.create(store=redis_service.url, store_prefix=prefix, fleet_metrics=False)
            try:
                ev = rt.ab.evaluate_test("load_test")
                evaluation = {"n": ev["n_control"] + ev["n_treatment"]}
            finally:
                rt.close()
            return evaluation["n"] == REQUESTS

        _eventually(ab_complete)
        assert evaluation["n"] == REQUESTS

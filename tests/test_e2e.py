"""End to end: the example service scraped by a real Prometheus with the shipped config and rules.

Every seed family is queryable with PromQL, and the shipped drift alert fires after drift is
injected (rule ``for`` and evaluation interval shortened for the test).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from mlops_otel import semconv
from mlops_otel.deploy import ALERT_DRIFT, alert_rules, prometheus_config, to_yaml

from .services import prometheus_server, uvicorn_process

pytestmark = pytest.mark.integration


def _wait(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _selector(spec: semconv.MetricSpec) -> str:
    name = spec.prometheus_name
    return f"{name}_bucket" if spec.kind is semconv.MetricKind.HISTOGRAM else name


def test_prometheus_scrapes_the_service_and_the_drift_alert_fires() -> None:
    env = {"MLOPS_OTEL_STORE_URL": "memory://", "MLOPS_OTEL_MANAGEMENT_TOKEN": "e2e"}
    with uvicorn_process("examples.diagnosis_service.app:app", env=env) as (url, _proc):
        target = url.removeprefix("http://")
        config = prometheus_config(targets=[target], scrape_interval="1s", evaluation_interval="1s")
        rules = alert_rules(drift_for="3s", evaluation_interval="1s")
        with prometheus_server(to_yaml(config), files={"alerts.yml": to_yaml(rules)}) as prom, \
                httpx.Client(base_url=url, timeout=30) as client:
            equipment = client.get("/equipment").json()
            # Sequential: the seeded simulation makes the same requests each run. 600 requests pass the
            # detector's min_samples (half its 1,000-sample window), so model_drift_score is published.
            for i in range(600):
                client.post("/diagnosis/create", json={"equipment_id": equipment[i % len(equipment)],
                                                       "user_id": f"user-{i}"})
            # Every seed family, with exactly its label keys (plus job/instance from the scrape).
            for spec in semconv.SEED_METRICS:
                result = _wait(lambda spec=spec: prom.query(_selector(spec)), f"{spec.prometheus_name} in Prometheus")
                keys = set(result[0]["metric"]) - {"__name__", "job", "instance", "le"}
                assert keys == set(spec.labels), spec.prometheus_name
            _wait(lambda: float(prom.query(f"sum({semconv.DIAGNOSIS_REQUESTS.prometheus_name})")[0]["value"][1])
                  == 600.0, "all 600 requests counted")
            assert not [a for a in prom.api("alerts")["alerts"] if a["labels"]["alertname"] == ALERT_DRIFT]

            client.post("/simulation/drift", json={"level": 1.5})
            for i in range(1_200):
                client.post("/diagnosis/create", json={"equipment_id": equipment[i % len(equipment)],
                                                       "user_id": f"user-{i}"})

            def firing() -> list[dict[str, Any]]:
                return [a for a in prom.api("alerts")["alerts"]
                        if a["labels"]["alertname"] == ALERT_DRIFT and a["state"] == "firing"]

            alerts = _wait(firing, "the drift alert to fire")
            assert alerts[0]["labels"]["model_type"] == "gnn"
            assert alerts[0]["labels"]["model_version"] == "v2.1.0"
            assert float(alerts[0]["value"]) > 0.3

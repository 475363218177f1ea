"""The operator's pages with 100 model versions (10 model types x 10) and 10 A/B tests.

Each A/B test has evaluated results and a 5-evaluation history; each champion and challenger
has a drift detector with a 2,000-sample reference and a full 1,000-sample window (20 detectors).
Time per page request through the ASGI app in process (starlette's TestClient, memory store),
beside the JSON API calls that read the same data. The overview evaluates every active test
(read-only) and reports every detector, so it is the page that grows with the fleet.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

import mlops_otel
from mlops_otel import Runtime
from mlops_otel.fastapi import get_runtime, instrument_app

from ._harness import Row, row, time_per_call

BENCH = "ui"
TYPES = 10
VERSIONS = 10
AUTH = {"Authorization": "Bearer bench"}


def _fill(client: TestClient, runtime: Runtime) -> None:
    rng = np.random.default_rng(5)
    for t in range(TYPES):
        model_type = f"model{t}"
        for v in range(VERSIONS):
            runtime.registry.register(model_type, f"v{v}")
        test = f"test{t}"
        client.post("/mlops/ab/tests", headers=AUTH, json={
            "name": test, "model_type": model_type, "control_version": "v0", "treatment_version": "v1",
            "treatment_traffic_pct": 50, "min_samples": 100})
        for version in ("v0", "v1"):
            detector = runtime.drift.get_detector(model_type, version)
            detector.set_reference(anomaly_scores=rng.beta(2, 5, 2000), confidences=rng.beta(8, 2, 2000))
            detector.add_production_samples(rng.beta(2, 4, 1000), rng.beta(8, 2, 1000))
        for _ in range(5):
            for variant in ("control", "treatment"):
                for conf in rng.normal(0.8, 0.05, 100).clip(0, 1):
                    runtime.ab.record_result(test, variant, 20.0, float(conf), error=False)
            client.post(f"/mlops/ab/tests/{test}/evaluate", headers=AUTH)


def run(quick: bool = False) -> list[Row]:
    n, repeat = (2, 2) if quick else (10, 5)
    mlops_otel.reset_default()
    app = FastAPI(title="bench")
    instrument_app(app, runtime_factory=lambda: Runtime.create(store="memory://"), management=True,
                   management_token="bench", instrument_http=False, install_as_default=False)
    rows: list[Row] = []
    with TestClient(app) as client:
        _fill(client, get_runtime(app))
        cases: list[tuple[str, str, str]] = [
            ("page: overview", "/mlops/ui", "10 types, 100 versions, 10 tests, 20 detectors"),
            ("page: experiment", "/mlops/ui/experiments/test3", "4 charts, 5-evaluation history"),
            ("page: drift", "/mlops/ui/drift/model3/v0", "3 charts"),
            ("page: registry", "/mlops/ui/registry/model3", "10 versions"),
            ("API: GET /mlops/drift (JSON)", "/mlops/drift", "the 20 drift reports the overview shows"),
            ("API: GET /mlops/ab/tests (JSON)", "/mlops/ab/tests", "no evaluation"),
        ]
        for case, path, note in cases:
            assert client.get(path).status_code == 200, path

            def fetch(k: int, path: str = path) -> None:
                for _ in range(k):
                    client.get(path)

            call: Callable[[int], None] = fetch
            size = len(client.get(path).content)
            rows.append(row(BENCH, case, time_per_call(call, n, repeat, warmup=1), n, f"{note}; {size:,} bytes"))
    mlops_otel.reset_default()
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.case:34} {r.median_us / 1000:8.2f} ms (min {r.min_us / 1000:.2f}, max {r.max_us / 1000:.2f}) {r.note}")

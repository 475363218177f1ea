"""End to end: the example service's latency and throughput with the SDK and without it.

The load generator (benchmarks/_load.py) sends diagnosis requests on loopback to
uvicorn running the example service: with mlops-otel on the in-memory store (1 worker),
on a shared Redis store (2 workers, fleet metrics on), and the same models and flow with
no SDK at all (1 and 2 workers). Latency percentiles come from 2 concurrent clients (the
server not saturated); throughput from 16 concurrent clients. Client and server share
this machine's 2 cores, so absolute numbers are lower than on a real deployment, and two
workers compete with the client for them; the ratios are what to read. Each case repeats
both phases `repeat` times; the table gives medians (throughput also min and max). Non-2xx answers
are the example GNN's simulated inference failures (503).
"""

from __future__ import annotations

import statistics
import sys
import uuid
from typing import Any

from ._load import run_load
from ._services import redis_server, uvicorn_server

BENCH = "e2e"
TARGET = "examples.diagnosis_service.app:app"


def _case(name: str, env: dict[str, str], workers: int, requests: int, repeat: int) -> dict[str, Any]:
    p50, p99, rps, sent, non_2xx = [], [], [], 0, 0
    with uvicorn_server(TARGET, env=env, workers=workers) as url:
        run_load(url, requests=min(200, requests), concurrency=16)  # warm-up
        for i in range(repeat):
            # Latency with the server not saturated (2 clients), so queueing does not dominate the
            # percentiles; throughput with 16 clients keeping every worker busy.
            latency = run_load(url, requests=requests // 2, concurrency=2, max_seconds=300, seed=2 + i)
            load = run_load(url, requests=requests, concurrency=16, max_seconds=300, seed=100 + i)
            p50.append(latency.p50)
            p99.append(latency.percentile(99))
            rps.append(load.throughput)
            sent += latency.sent + load.sent
            non_2xx += latency.sent + load.sent - latency.statuses.get(200, 0) - load.statuses.get(200, 0)
    return {
        "bench": BENCH, "case": name, "workers": workers, "requests": sent, "repeat": repeat,
        "p50_ms": statistics.median(p50), "p99_ms": statistics.median(p99),
        "throughput_rps": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "non_2xx": non_2xx,
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    requests, repeat = (200, 1) if quick else (2_000, 3)
    rows = [
        _case("without SDK", {"EXAMPLE_WITHOUT_SDK": "1"}, 1, requests, repeat),
        _case("mlops-otel, memory store", {"MLOPS_OTEL_STORE_URL": "memory://"}, 1, requests, repeat),
    ]
    if not quick:
        with redis_server() as url:
            rows.append(_case("without SDK", {"EXAMPLE_WITHOUT_SDK": "1"}, 2, requests, repeat))
            rows.append(_case("mlops-otel, Redis store", {
                "MLOPS_OTEL_STORE_URL": url, "MLOPS_OTEL_STORE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            }, 2, requests, repeat))
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Latency and throughput of each SDK case relative to the no-SDK case with as many workers."""
    base = {r["workers"]: r for r in rows if r["case"] == "without SDK"}
    lines = []
    for r in rows:
        b = base.get(r["workers"])
        if r["case"] == "without SDK" or b is None:
            continue
        lines.append(
            f"- {r['case']} ({r['workers']} worker(s)): p50 {r['p50_ms'] / b['p50_ms']:.2f}x, "
            f"p99 {r['p99_ms'] / b['p99_ms']:.2f}x, throughput {r['throughput_rps'] / b['throughput_rps']:.2f}x "
            f"of the service without the SDK."
        )
    return lines


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)

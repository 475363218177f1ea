"""End to end: the example service's latency at fixed request rates, with the SDK and without it.

Load: wrk (C, not Python: it does not compete for the service's interpreter) with
``benchmarks/wrk_open_loop.lua``: 4 connections on a fixed, open-loop schedule at the given
rate, latency measured from each request's due time, so a slow answer's effect on the requests
queued behind it is counted (no coordinated omission). Service: uvicorn running the example
(``benchmarks/_e2e_app.py``) with 1 worker on the memory store, and with 2 workers on a shared
Redis store (fleet metrics on); each against the same models and flow with no SDK at all.
The default configuration's HTTP layer is mlops-otel's lean middleware (``instrument_http="light"``,
the default since #16). Variants: without HTTP instrumentation, with the OTel ASGI middleware instead
(``instrument_http="otel"``, the switch back), and with an OTel SDK tracer provider sampling
0%, 1% and 100% of traces (spans encoded to OTLP protobuf and dropped: the export CPU, no network).

Method: all servers of a group run side by side; each round runs every case once per rate,
in an order rotated every round (interleaved), after a warm-up. The table gives the median over
rounds with min and max; ``x`` columns are the median over rounds of the ratio to the no-SDK
service *in the same round*, the figure to read on a shared machine. ``cpu_ms_per_req`` is the
service's CPU time (every worker, background threads included; from /proc) per answered request:
on a machine shared with other work, latency swings with whoever else runs, CPU per request much
less, so ``cpu_x`` is the steadiest measure of what the SDK costs. ``late`` counts requests
sent more than 1 ms after their due time (a saturated or descheduled server, or wrk itself not
scheduled); ``non_2xx`` are the example GNN's simulated inference failures (503).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import attrs

from ._load import wait_until_ready
from ._services import cpu_seconds, redis_server, uvicorn_process
from ._wrk import WrkResult, require_wrk, run_wrk

BENCH = "e2e"
TARGET = "benchmarks._e2e_app:app"
BASELINE = "without SDK"
DEFAULT = "mlops-otel (default)"
OTEL = 'mlops-otel, OTel ASGI middleware (instrument_http="otel")'
#: (workers, p50 goal, p99 goal) of issue #16, for the default configuration.
GOALS = {1: (1.05, 1.15), 2: (1.10, 1.25)}


@attrs.frozen
class Case:
    name: str
    env: dict[str, str]


def _cases(quick: bool, store: dict[str, str]) -> list[Case]:
    sdk = {**store}
    cases = [
        Case(BASELINE, {"EXAMPLE_WITHOUT_SDK": "1"}),
        Case(DEFAULT, {**sdk, "BENCH_HTTP": "light"}),
    ]
    if quick:
        return cases
    return [
        *cases,
        Case("mlops-otel, no HTTP instrumentation", {**sdk, "BENCH_HTTP": "none"}),
        Case(OTEL, {**sdk, "BENCH_HTTP": "otel"}),
        Case("mlops-otel, tracing 0%", {**sdk, "BENCH_HTTP": "light", "BENCH_TRACE_RATIO": "0"}),
        Case("mlops-otel, tracing 1%", {**sdk, "BENCH_HTTP": "light", "BENCH_TRACE_RATIO": "0.01"}),
        Case("mlops-otel, tracing 100%", {**sdk, "BENCH_HTTP": "light", "BENCH_TRACE_RATIO": "1"}),
    ]


def _pinning(workers: int) -> tuple[str | None, str | None]:
    """CPUs for (service, wrk): separate cores when there are enough, else none (the scheduler decides).

    ``BENCH_E2E_PIN=1`` forces pinning (service on all cores but the last, wrk on the last),
    ``0`` turns it off. Default: pin when the machine has at least ``workers + 2`` cores.
    """
    n = os.cpu_count() or 1
    choice = os.environ.get("BENCH_E2E_PIN", "")
    if n < 2 or choice == "0" or (choice != "1" and n < workers + 2):
        return None, None
    return f"0-{n - 2}", str(n - 1)


@contextlib.contextmanager
def _servers(cases: list[Case], workers: int, cpus: str | None) -> Iterator[dict[str, tuple[str, int, list[str]]]]:
    with contextlib.ExitStack() as stack:
        procs = {c.name: stack.enter_context(uvicorn_process(TARGET, env=c.env, workers=workers, cpus=cpus))
                 for c in cases}
        yield {name: (url, pid, wait_until_ready(url)) for name, (url, pid) in procs.items()}


def _group(label: str, cases: list[Case], workers: int, rates: tuple[int, ...], seconds: float, repeat: int,
           ) -> list[dict[str, Any]]:
    service_cpus, wrk_cpus = _pinning(workers)
    results: dict[tuple[str, int], list[WrkResult]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    with _servers(cases, workers, service_cpus) as servers:
        for url, _pid, ids in servers.values():  # warm-up: imports, first requests, caches
            run_wrk(url, rate=rates[0], seconds=1, warmup_seconds=1, equipment_ids=ids, cpus=wrk_cpus)
        for r in range(repeat):
            order = cases[r % len(cases):] + cases[:r % len(cases)]
            for rate in rates:
                for case in order:
                    url, pid, ids = servers[case.name]
                    before = cpu_seconds(pid)
                    res = run_wrk(url, rate=rate, seconds=seconds, warmup_seconds=0, equipment_ids=ids,
                                  cpus=wrk_cpus)
                    # the service's CPU (all workers, background threads included) per answered request
                    cpu.setdefault((case.name, rate), []).append((cpu_seconds(pid) - before) / max(1, res.sent))
                    results.setdefault((case.name, rate), []).append(res)
    pin = f"service on CPUs {service_cpus}, wrk on {wrk_cpus}" if service_cpus else "not pinned"
    rows = []
    for rate in rates:
        base = results[(BASELINE, rate)]
        for case in cases:
            runs = results[(case.name, rate)]
            row: dict[str, Any] = {"bench": BENCH, "group": label, "case": case.name, "workers": workers,
                                   "rate_rps": rate}
            for q, col in ((50, "p50"), (99, "p99"), (99.9, "p99.9")):
                values = [x.percentile(q) for x in runs]
                row[f"{col}_ms"] = statistics.median(values)
                row[f"{col}_min"] = min(values)
                row[f"{col}_max"] = max(values)
                row[f"{col}_x"] = statistics.median(x.percentile(q) / b.percentile(q) for x, b in zip(runs, base, strict=True))
            own, base_cpu = cpu[(case.name, rate)], cpu[(BASELINE, rate)]
            row["cpu_ms_per_req"] = statistics.median(own) * 1e3
            row["cpu_x"] = statistics.median(a / b for a, b in zip(own, base_cpu, strict=True) if b > 0)
            row["requests"] = sum(x.sent for x in runs)
            row["repeat"] = len(runs)
            row["late"] = sum(x.late for x in runs)
            row["non_2xx"] = sum(x.sent - x.statuses.get(200, 0) for x in runs) + sum(x.socket_errors for x in runs)
            row["note"] = pin
            rows.append(row)
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    require_wrk()
    rates, seconds, repeat = ((100,), 2.0, 1) if quick else ((50, 150), 4.0, 5)
    memory = {"MLOPS_OTEL_STORE_URL": "memory://"}
    rows = _group("1 worker, memory store", _cases(quick, memory), 1, rates, seconds, repeat)
    if not quick:
        with redis_server() as url:
            redis = {"MLOPS_OTEL_STORE_URL": url, "MLOPS_OTEL_STORE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"}
            cases = [c for c in _cases(False, redis) if "tracing" not in c.name]
            rows += _group("2 workers, Redis store", cases, 2, rates, seconds, repeat)
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The goals of issue #16 for the default configuration (light HTTP middleware) per group and rate,
    and, beside each, the same figures with the OTel ASGI middleware (``instrument_http="otel"``)."""
    lines = []
    for r in rows:
        if r["case"] not in (DEFAULT, OTEL) or r["workers"] not in GOALS:
            continue
        g50, g99 = GOALS[r["workers"]]
        figures = (f"- {r['group']}, {r['rate_rps']} requests/s: {r['case']} p50 **{r['p50_x']:.2f}x**, "
                   f"p99 **{r['p99_x']:.2f}x**, p99.9 {r['p99.9_x']:.2f}x of the service without the SDK")
        if r["case"] == DEFAULT:
            met = r["p50_x"] <= g50 and r["p99_x"] <= g99
            verdict = f"goal: p50 <= {g50}x, p99 <= {g99}x: {'met' if met else 'not met'}"
        else:
            verdict = "for comparison: the goals are the default configuration's"
        lines.append(f"{figures} ({verdict}); service CPU per request {r['cpu_x']:.2f}x.")
    return lines


if __name__ == "__main__":
    started = time.perf_counter()
    out = run(quick="--quick" in sys.argv)
    for row in out:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    print("\n".join(summary(out)))
    print(f"{time.perf_counter() - started:.1f} s")

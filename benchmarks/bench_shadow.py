"""Shadow traffic on the request path: added latency with the challenger on 100 % of requests.

One process serves a paced request stream (open loop: each request starts at its scheduled time,
so queueing shows in the latency) with a champion model (numpy, about 0.3 ms), with shadow off and
with shadow on for 100 % of requests (the same model as challenger, run by a ShadowRunner worker
thread after the response). Rounds alternate off/on side by side under the same load; the table
gives per-round p50 and p99 of the request latency (median over rounds, with min and max), and how
many shadow pairs completed or were counted as dropped. Then the same end to end over HTTP: one
uvicorn service per mode (``benchmarks/_shadow_app.py``: ``runtime.prediction(..., shadow=...)``
around the model), all running, loaded in alternating rounds at the same paced rate by an httpx
client (latency from each request's scheduled start to its response).

Run: ``python -m benchmarks.bench_shadow`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import attrs
import numpy as np

from mlops_otel.shadow import Difference, Flip, ShadowConfig, ShadowRunner
from mlops_otel.telemetry import Telemetry

from ._harness import row, time_per_call

BENCH = "shadow"
_W = np.random.default_rng(0).normal(size=(256, 256)) / 16.0


def model(x: np.ndarray[Any, Any]) -> dict[str, float]:
    """A stand-in GNN: a few dense layers, an anomaly score and a confidence."""
    h = x
    for _ in range(4):
        h = np.tanh(_W @ h)
    score = float(1.0 / (1.0 + np.exp(-h[0])))
    return {"anomaly_score": score, "confidence": float(abs(h[1]))}


def _round(rate: float, n: int, runner: ShadowRunner | None, inputs: list[np.ndarray[Any, Any]]) -> list[float]:
    """Serve *n* requests at *rate* per second; return each request's latency in ms (from its scheduled start)."""
    lat = []
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            time.sleep(min(due - now, 0.0005))
        x = inputs[i % len(inputs)]
        out = model(x)
        if runner is not None:
            runner.submit(x, out)
        lat.append((time.perf_counter() - due) * 1000.0)
    return lat


MODES = ("off", "on, worker thread", "on, process pool")


def measure(rate: float, n: int, rounds: int) -> list[dict[str, Any]]:
    """Alternate the modes round by round under the same paced load."""
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=256) for _ in range(64)]
    cfg = ShadowConfig(model_type="gnn", challenger_version="v2", comparisons=[
        Difference("anomaly_score", 0.1), Flip("anomaly_score", 0.5)], queue_size=10_000)
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    pool.submit(model, inputs[0]).result()  # start the child before timing
    runners: dict[str, ShadowRunner | None] = {
        "off": None,
        "on, worker thread": ShadowRunner(cfg, model, telemetry=Telemetry()),
        "on, process pool": ShadowRunner(cfg, model, telemetry=Telemetry(), executor=pool),
    }
    _round(rate, min(n, 200), None, inputs)  # warm-up
    p50: dict[str, list[float]] = {m: [] for m in MODES}
    p99: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        for _ in range(rounds):
            for mode in MODES:
                lat = np.asarray(_round(rate, n, runners[mode], inputs))
                p50[mode].append(float(np.quantile(lat, 0.5)))
                p99[mode].append(float(np.quantile(lat, 0.99)))
                runner = runners[mode]
                if runner is not None:
                    runner.drain(60.0)  # the next round starts without a backlog
    finally:
        for r in runners.values():
            if r is not None:
                r.close(timeout=10.0)
        pool.shutdown()
    rows = []
    for mode in MODES:
        runner = runners[mode]
        report = None if runner is None else runner.report()
        rows.append({
            "bench": BENCH, "case": f"shadow {mode}, {rate:.0f} req/s", "rounds": float(rounds),
            "requests_per_round": float(n),
            "p50_ms": statistics.median(p50[mode]), "p50_min_ms": min(p50[mode]), "p50_max_ms": max(p50[mode]),
            "p99_ms": statistics.median(p99[mode]), "p99_min_ms": min(p99[mode]), "p99_max_ms": max(p99[mode]),
            "shadow_submitted": float(report.submitted if report else 0),
            "shadow_completed": float(report.completed if report else 0),
            "shadow_dropped": float(report.dropped if report else 0),
        })
    return rows


def submit_cost(n: int, repeat: int) -> dict[str, Any]:
    """The caller's cost of one ``submit`` (the challenger is held, so only the hand-off is timed)."""
    release = threading.Event()
    cfg = ShadowConfig(model_type="gnn", challenger_version="v2", comparisons=[Difference("anomaly_score", 0.1)],
                       queue_size=n * (repeat + 2))
    runner = ShadowRunner(cfg, lambda x: (release.wait(), {"anomaly_score": x})[1], telemetry=Telemetry())
    out = {"anomaly_score": 0.5}

    def submits(k: int) -> None:
        for i in range(k):
            runner.submit(i, out)

    try:
        runs = time_per_call(submits, n, repeat)
    finally:
        release.set()
        runner.close(timeout=30.0)
    return attrs.asdict(row(BENCH, "ShadowRunner.submit, per call (caller's cost)", runs, n))


E2E_MODES = ("off", "thread", "process")


async def _paced_http(url: str, rate: float, n: int, first: int) -> list[float]:
    """POST *n* requests at *rate* per second (open loop); latency in ms from each request's scheduled start."""
    import httpx

    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        start = loop.time() + 0.05

        async def one(i: int) -> float:
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            response = await client.post(f"/predict/{first + i}")
            response.raise_for_status()
            return (loop.time() - due) * 1000.0

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def measure_e2e(rate: float, n: int, rounds: int) -> list[dict[str, Any]]:
    """One uvicorn service per mode (off, thread, process pool), loaded in alternating rounds over HTTP."""
    import httpx

    from ._services import uvicorn_server

    p50: dict[str, list[float]] = {m: [] for m in E2E_MODES}
    p99: dict[str, list[float]] = {m: [] for m in E2E_MODES}
    totals: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        urls = {m: stack.enter_context(uvicorn_server("benchmarks._shadow_app:app", env={"MLOPS_BENCH_SHADOW": m}))
                for m in E2E_MODES}
        for url in urls.values():
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=5).json().get("ready"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not become ready")
                time.sleep(0.1)
            asyncio.run(_paced_http(url, rate, min(n, 100), 0))  # warm-up
        for r in range(rounds):
            for mode in E2E_MODES:
                lat = np.asarray(asyncio.run(_paced_http(urls[mode], rate, n, (r + 1) * n)))
                p50[mode].append(float(np.quantile(lat, 0.5)))
                p99[mode].append(float(np.quantile(lat, 0.99)))
                if mode != "off":
                    httpx.get(f"{urls[mode]}/shadow", timeout=60)  # drain: the next round starts clean
        for mode, url in urls.items():
            totals[mode] = httpx.get(f"{url}/shadow", timeout=60).json()
    rows = []
    for mode in E2E_MODES:
        t = totals.get(mode, {})
        rows.append({
            "bench": BENCH, "case": f"HTTP end to end, shadow {mode}, {rate:.0f} req/s", "rounds": float(rounds),
            "requests_per_round": float(n),
            "p50_ms": statistics.median(p50[mode]), "p50_min_ms": min(p50[mode]), "p50_max_ms": max(p50[mode]),
            "p99_ms": statistics.median(p99[mode]), "p99_min_ms": min(p99[mode]), "p99_max_ms": max(p99[mode]),
            "shadow_submitted": float(t.get("submitted", 0)), "shadow_completed": float(t.get("completed", 0)),
            "shadow_dropped": float(t.get("dropped", 0)),
        })
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for the performance report."""
    if quick:
        return [*measure(rate=200.0, n=100, rounds=1), submit_cost(1000, 2)]  # no HTTP services in the smoke
    return [*measure(rate=200.0, n=2000, rounds=7), submit_cost(20_000, 7), *measure_e2e(100.0, 1000, 5)]


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Shadow on vs off, side by side."""
    off = rows[0]
    lines = []
    for on in rows[1:3]:
        lines.append(
            f"- {on['case']} vs off: p50 {on['p50_ms']:.3f} vs {off['p50_ms']:.3f} ms "
            f"(ranges {on['p50_min_ms']:.3f}-{on['p50_max_ms']:.3f} vs {off['p50_min_ms']:.3f}-"
            f"{off['p50_max_ms']:.3f}), p99 {on['p99_ms']:.3f} vs {off['p99_ms']:.3f} ms (ranges "
            f"{on['p99_min_ms']:.3f}-{on['p99_max_ms']:.3f} vs {off['p99_min_ms']:.3f}-{off['p99_max_ms']:.3f}); "
            f"pairs {on['shadow_submitted']:.0f} submitted, {on['shadow_completed']:.0f} completed, "
            f"{on['shadow_dropped']:.0f} dropped (counted).")
    cost = rows[3]
    lines.append(f"- `submit()` costs the caller {cost['median_us']:.2f} µs per call (min {cost['min_us']:.2f}, "
                 f"max {cost['max_us']:.2f}).")
    if len(rows) < 7:
        return lines
    e2e_off = rows[4]
    for on in rows[5:7]:
        lines.append(
            f"- {on['case']} vs off: p50 {on['p50_ms']:.2f} vs {e2e_off['p50_ms']:.2f} ms (ranges "
            f"{on['p50_min_ms']:.2f}-{on['p50_max_ms']:.2f} vs {e2e_off['p50_min_ms']:.2f}-{e2e_off['p50_max_ms']:.2f}), "
            f"p99 {on['p99_ms']:.2f} vs {e2e_off['p99_ms']:.2f} ms (ranges {on['p99_min_ms']:.2f}-{on['p99_max_ms']:.2f} "
            f"vs {e2e_off['p99_min_ms']:.2f}-{e2e_off['p99_max_ms']:.2f}); pairs {on['shadow_submitted']:.0f} submitted, "
            f"{on['shadow_completed']:.0f} completed, {on['shadow_dropped']:.0f} dropped.")
    return lines


if __name__ == "__main__":
    rows = run("--quick" in sys.argv)
    for r in rows:
        print(r)
    print("\n".join(summary(rows)))

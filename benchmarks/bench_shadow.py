"""Shadow traffic on the request path: added latency with the challenger on 100 % of requests.

One process serves a paced request stream (open loop: each request starts at its scheduled time,
so queueing shows in the latency) with a champion model (numpy, about 0.3 ms), with shadow off and
with shadow on for 100 % of requests (the same model as challenger, run by a ShadowRunner worker
thread after the response). Rounds alternate off/on side by side under the same load; the table
gives per-round p50 and p99 of the request latency (median over rounds, with min and max), and how
many shadow pairs completed or were counted as dropped. In-process, not over HTTP: the HTTP stack
adds the same cost to both sides.

Run: ``python -m benchmarks.bench_shadow`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

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


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for the performance report."""
    if quick:
        return [*measure(rate=200.0, n=100, rounds=1), submit_cost(1000, 2)]
    return [*measure(rate=200.0, n=2000, rounds=7), submit_cost(20_000, 7)]


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
    return lines


if __name__ == "__main__":
    rows = run("--quick" in sys.argv)
    for r in rows:
        print(r)
    print("\n".join(summary(rows)))

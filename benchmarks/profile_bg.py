"""Background CPU of the service: per-thread CPU and wake-ups under wrk at fixed rates (issue #16).

Starts the cases side by side (the example service without the SDK, and with the SDK but without
HTTP instrumentation), each with ``BENCH_THREAD_NAMES=1`` so every Python thread carries its name
(without the ``mlops-otel-`` prefix) as its OS thread name. Every round drives each case, in an
order rotated every round, with wrk at each rate, and reads ``/proc/<pid>/task/<tid>/schedstat``
(CPU time in ns, so no 10 ms clock ticks) and the voluntary context switches (wake-ups) of every
thread of the service's processes before and after. Reports, per case and rate, the median over
rounds (with min and max) of: CPU per answered request of the whole service, its paired ratio to
the no-SDK service of the same round, and each thread name's CPU (ms/s) and wake-ups per second
(summed over the worker processes).

Run: ``python -m benchmarks.profile_bg [--redis] [--workers N] [--rates 50,150] [--seconds 6] [--rounds 3]
[--compare PYTHONPATH]`` (``--compare``: a third case, the SDK case importing the code found first on
that path, e.g. ``git archive main src`` unpacked somewhere: before/after side by side). A rate of 0
measures the idle service (no load for *seconds*; ``cpu_ms_req`` is then the CPU of the whole interval).
Not part of ``python -m benchmarks``: its output is the attribution in docs/performance-analysis.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._load import wait_until_ready
from ._services import redis_server, uvicorn_process
from ._wrk import run_wrk

TARGET = "benchmarks._e2e_app:app"
BASELINE = "without-sdk"


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                parents[int(entry.name)] = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        tree += kids
        frontier += kids
    return tree


def threads(pid: int) -> dict[tuple[int, int], tuple[str, float, int]]:
    """(pid, tid) -> (thread name, CPU seconds, voluntary context switches) for the process tree of *pid*."""
    out: dict[tuple[int, int], tuple[str, float, int]] = {}
    tree = _descendants(pid)
    for p in tree:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                task = Path(f"/proc/{p}/task/{tid}")
                with contextlib.suppress(OSError):
                    name = task.joinpath("comm").read_text().strip()
                    ns = int(task.joinpath("schedstat").read_text().split()[0])
                    status = task.joinpath("status").read_text()
                    switches = next(int(line.split()[1]) for line in status.splitlines()
                                    if line.startswith("voluntary_ctxt_switches"))
                    if int(tid) == p:
                        name = "launcher" if p == pid and len(tree) > 1 else "main"
                    out[(p, int(tid))] = (name, ns / 1e9, switches)
    return out


def _delta(before: dict[tuple[int, int], tuple[str, float, int]], after: dict[tuple[int, int], tuple[str, float, int]],
           elapsed: float) -> dict[str, dict[str, float]]:
    per: dict[str, dict[str, float]] = {}
    for key, (name, cpu, sw) in after.items():
        _, cpu0, sw0 = before.get(key, (name, 0.0, 0))
        row = per.setdefault(name, {"cpu_ms_s": 0.0, "wakeups_s": 0.0})
        row["cpu_ms_s"] += (cpu - cpu0) * 1e3 / elapsed
        row["wakeups_s"] += (sw - sw0) / elapsed
    return per


@contextlib.contextmanager
def _store(redis: bool) -> Iterator[dict[str, str]]:
    if not redis:
        yield {"MLOPS_OTEL_STORE_URL": "memory://"}
        return
    with redis_server() as url:
        yield {"MLOPS_OTEL_STORE_URL": url, "MLOPS_OTEL_STORE_PREFIX": f"bg-{uuid.uuid4().hex[:8]}"}


def run(*, redis: bool, workers: int, rates: list[float], seconds: float, rounds: int,
        extra: dict[str, str], compare: str | None = None) -> list[dict[str, Any]]:
    samples: dict[tuple[str, float], list[dict[str, Any]]] = {}
    with _store(redis) as store, contextlib.ExitStack() as stack:
        cases = {BASELINE: {"EXAMPLE_WITHOUT_SDK": "1"}, "sdk-no-http": {**store, "BENCH_HTTP": "none", **extra}}
        if compare:  # the same SDK case on other code (e.g. an older checkout's src), side by side
            root = str(Path(__file__).resolve().parent.parent)
            cases["sdk-no-http (compare)"] = {**cases["sdk-no-http"], "PYTHONPATH": f"{compare}:{root}"}
        procs = {name: stack.enter_context(uvicorn_process(TARGET, env={**env, "BENCH_THREAD_NAMES": "1"},
                                                           workers=workers))
                 for name, env in cases.items()}
        ids = {name: wait_until_ready(url) for name, (url, _) in procs.items()}
        for name, (url, _) in procs.items():
            run_wrk(url, rate=rates[0], seconds=1, warmup_seconds=1, equipment_ids=ids[name])
        order = list(cases)
        for r in range(rounds):
            rot = order[r % len(order):] + order[:r % len(order)]
            for rate in rates:
                for name in rot:
                    url, pid = procs[name]
                    before, t0 = threads(pid), time.perf_counter()
                    if rate > 0:
                        res = run_wrk(url, rate=rate, seconds=seconds, warmup_seconds=0.5, equipment_ids=ids[name])
                        sent, p50 = res.sent, res.percentile(50)
                    else:  # idle: what the service costs with no request at all
                        time.sleep(seconds)
                        sent, p50 = 0, 0.0
                    after, elapsed = threads(pid), time.perf_counter() - t0
                    per = _delta(before, after, elapsed)
                    total = sum(v["cpu_ms_s"] for v in per.values()) * elapsed / 1e3
                    samples.setdefault((name, rate), []).append(
                        {"cpu_ms_req": total * 1e3 / max(1, sent), "threads": per, "p50": p50})
    rows = []
    for (name, rate), runs in samples.items():
        base = samples[(BASELINE, rate)]
        ratios = [a["cpu_ms_req"] / b["cpu_ms_req"] for a, b in zip(runs, base, strict=True)]
        names = sorted({n for x in runs for n in x["threads"]})
        rows.append({
            "case": name, "rate": rate, "workers": workers, "store": "redis" if redis else "memory",
            "cpu_ms_req": _mm([x["cpu_ms_req"] for x in runs]), "cpu_x": _mm(ratios),
            "p50_ms": _mm([x["p50"] for x in runs]),
            "threads": {n: {k: _mm([x["threads"].get(n, {}).get(k, 0.0) for x in runs])
                            for k in ("cpu_ms_s", "wakeups_s")} for n in names},
        })
    return rows


def _mm(xs: list[float]) -> list[float]:
    return [round(statistics.median(xs), 3), round(min(xs), 3), round(max(xs), 3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_bg")
    parser.add_argument("--redis", action="store_true", help="a throwaway redis-server as the store (fleet on)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rates", default="50,150")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the SDK case")
    parser.add_argument("--compare", metavar="PYTHONPATH",
                        help="also run the SDK case with this PYTHONPATH first (e.g. the src of a main checkout)")
    args = parser.parse_args(argv)
    extra = dict(kv.split("=", 1) for kv in args.env)
    rows = run(redis=args.redis, workers=args.workers, rates=[float(x) for x in args.rates.split(",")],
               seconds=args.seconds, rounds=args.rounds, extra=extra, compare=args.compare)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

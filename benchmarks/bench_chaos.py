"""Faults on Redis under the example service: worst request latency during each fault next to the p99 without.

The example service runs on uvicorn in this process (real HTTP on loopback, 4 closed-loop clients,
models that never fail) over a real ``redis-server``; its champion was promoted to ``v2.2.0`` (the
example's fallback is ``v2.1.0``, so a lost registry would show). Per fault: the requests made while
it lasted (plus 0.5 s before and 1-2 s after), how many did not answer 200, which versions were
served, and the slowest request that overlapped the fault window, next to the p99 of a fault-free
phase of the same run. Faults: ``SIGSTOP`` then ``SIGCONT`` (a hung host), ``DEBUG SLEEP`` (a
blocking command), ``kill -9`` and restart from the AOF (data kept), ``kill -9`` and restart without
data files, and a clean restart that comes back empty (both detected as state loss and restored).

Until the ab branch lands, ``ABTestManager`` refreshes its view from the store on a request every
5 s, so a fault that overlaps that refresh still delays one request per worker by up to the 2 s
socket timeout; everything else reads in-process views.

Run: ``python -m benchmarks.bench_chaos`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

import sys
from typing import Any

from ._chaos import chaos_service, summarize

BENCH = "chaos"


def run(quick: bool = False) -> list[dict[str, Any]]:
    """One row per fault (plus the fault-free baseline)."""
    stop_s, sleep_s, steady_s = (1.0, 0.5, 1.0) if quick else (15.0, 2.0, 10.0)
    rows: list[dict[str, Any]] = []
    with chaos_service(clients=4) as svc:
        svc.phase(None, steady=1.0)  # warm-up
        baseline = summarize(*svc.phase(None, steady=steady_s))
        p99 = baseline["p99_ms"]

        def add(fault: str, summary: dict[str, Any]) -> None:
            rows.append({
                "bench": BENCH, "fault": fault, "requests": summary["requests"], "non_200": summary["errors"],
                "versions": ",".join(summary["versions"]), "worst_during_fault_ms": summary["worst_during_fault_ms"],
                "p99_without_fault_ms": p99,
            })

        add(f"none ({steady_s:g} s)", baseline)
        add(f"SIGSTOP {stop_s:g} s", summarize(*svc.phase(lambda: svc.redis.pause(stop_s))))
        add(f"DEBUG SLEEP {sleep_s:g} s", summarize(*svc.phase(lambda: svc.redis.debug_sleep(sleep_s))))
        svc.redis.enable_aof()
        add("kill -9, restart with AOF data", summarize(*svc.phase(svc.redis.restart_with_data, after=2.0)))
        add("kill -9, restart without data", summarize(*svc.phase(svc.redis.restart_without_data, after=2.0)))
        add("clean restart, empty", summarize(*svc.phase(svc.redis.restart_empty, after=2.0)))
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence on the worst fault."""
    worst = max(rows[1:], key=lambda r: r["worst_during_fault_ms"])
    return [f"Worst request under any fault: {worst['worst_during_fault_ms']:,.0f} ms ({worst['fault']}), against a "
            f"p99 of {rows[0]['p99_without_fault_ms']:,.0f} ms without faults; requests not answered 200 under "
            f"all faults: {sum(r['non_200'] for r in rows)}."]


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    for r in rows:
        print(r)
    print(*summary(rows), sep="\n")


if __name__ == "__main__":
    main(sys.argv[1:])

"""State stores: hot-path cost per recorded result and flush throughput.

One *record* is what an A/B test or drift monitor writes per result: an
increment of 5 float fields of a counter hash plus the append of one item to a
window capped at 1,000 (alternating over two variants). Cases, side by side in
one process against one local ``redis-server``:

* `MemoryStore` (embedded default),
* `RedisStore` write-behind with Redis up (the flusher thread runs meanwhile),
* `RedisStore` write-behind with Redis unreachable (connection refused, retrying),
* a synchronous redis-py write per record (pipeline: 5 x HINCRBYFLOAT + RPUSH + LTRIM),
* a loopback round trip (PING) for reference, and the bare loop building the arguments.

Flush throughput is end to end: record *n* results in a tight loop while the
flusher delivers, then `flush()`; records per second per process, for one group
(4 keys) and for 1,000 groups (4,000 keys).

Run: ``python -m benchmarks.bench_stores`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import redis

from mlops_otel.stores import MemoryStore, StateStore, make_key
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry

from ._harness import row, time_per_call
from ._services import free_port, redis_server

BENCH = "stores"
MAX_LEN = 1_000


def _keys(groups: int) -> tuple[list[str], list[str]]:
    counters = [make_key("ab", f"bench{g}", f"{v}:stats") for g in range(groups) for v in ("a", "b")]
    windows = [make_key("ab", f"bench{g}", f"{v}:window") for g in range(groups) for v in ("a", "b")]
    return counters, windows


def make_recorder(store: StateStore, groups: int = 1) -> Callable[[int], None]:
    """``run(n)`` records *n* results into *store*."""
    counters, windows = _keys(groups)
    incr, append = store.incr, store.append
    width = len(counters)

    def run(n: int) -> None:
        for i in range(n):
            k = i % width
            x = 0.5 + (i % 100) * 0.001
            incr(counters[k], {"n": 1.0, "sum": x, "sumsq": x * x, "errors": 0.0, "latency_s": 0.012})
            append(windows[k], [x], max_len=MAX_LEN)

    return run


def make_baseline() -> Callable[[int], None]:
    """The loop and argument building alone."""
    sink: list[object] = []

    def run(n: int) -> None:
        for i in range(n):
            x = 0.5 + (i % 100) * 0.001
            sink.append({"n": 1.0, "sum": x, "sumsq": x * x, "errors": 0.0, "latency_s": 0.012})
            sink.append([x])
            sink.clear()

    return run


def make_sync(client: redis.Redis, prefix: str) -> Callable[[int], None]:
    """One synchronous pipelined round trip per record."""
    counters, windows = _keys(1)
    counters = [f"{prefix}:{k}" for k in counters]
    windows = [f"{prefix}:{k}" for k in windows]

    def run(n: int) -> None:
        for i in range(n):
            k = i & 1
            x = 0.5 + (i % 100) * 0.001
            pipe = client.pipeline(transaction=False)
            for name, value in (("n", 1.0), ("sum", x), ("sumsq", x * x), ("errors", 0.0), ("latency_s", 0.012)):
                pipe.hincrbyfloat(counters[k], name, value)
            pipe.rpush(windows[k], repr(x))
            pipe.ltrim(windows[k], -MAX_LEN, -1)
            pipe.execute()

    return run


def make_ping(client: redis.Redis) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            client.ping()

    return run


def _throughput(url: str, groups: int, n: int, repeat: int) -> list[float]:
    """Seconds per record, recording *n* records and flushing them, *repeat* times."""
    runs = []
    for _ in range(repeat):
        store = RedisStore.from_url(url, prefix=f"bench-{uuid.uuid4().hex[:8]}", telemetry=Telemetry())
        record = make_recorder(store, groups)
        start = time.perf_counter()
        record(n)
        delivered = store.flush(120.0)
        elapsed = time.perf_counter() - start
        store.close()
        if not delivered:
            raise RuntimeError("flush did not complete")
        runs.append(elapsed / n)
    return runs


def _as_dict(case_row: Any) -> dict[str, Any]:
    d = attrs.asdict(case_row)
    d["records_per_s"] = 1e6 / d["median_us"] if d["median_us"] > 0 else float("inf")
    return d


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure every case side by side; one row per case (microseconds per record)."""
    n, repeat = (2_000, 3) if quick else (50_000, 9)
    n_sync = 200 if quick else 5_000
    n_flush = 5_000 if quick else 100_000
    rows = []
    with redis_server() as url:
        client = redis.Redis.from_url(url)
        tel = Telemetry()
        memory = MemoryStore(telemetry=tel)
        up = RedisStore.from_url(url, prefix="bench-up", telemetry=tel)
        down = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix="bench-down",
                                   telemetry=tel, max_backoff=0.5)
        cases: list[tuple[str, Callable[[int], None], int, str]] = [
            ("loop alone (builds the arguments)", make_baseline(), n, "subtract for the net cost"),
            ("MemoryStore", make_recorder(memory), n, ""),
            ("RedisStore write-behind, Redis up", make_recorder(up), n, "flusher delivering meanwhile"),
            ("RedisStore write-behind, Redis down", make_recorder(down), n, "connection refused, retrying"),
            ("redis-py synchronous pipeline", make_sync(client, "bench-sync"), n_sync, "1 round trip / record"),
            ("redis-py PING (loopback round trip)", make_ping(client), n_sync, "reference"),
        ]
        for case, fn, count, note in cases:
            rows.append(_as_dict(row(BENCH, case, time_per_call(fn, count, repeat), count, note)))
        assert up.flush(60.0)
        up.close()
        down.close(timeout=0.1)
        flush_repeat = 3 if quick else 5
        for groups in (1, 1_000):
            runs = _throughput(url, groups, n_flush, flush_repeat)
            rows.append(_as_dict(row(BENCH, f"flush throughput, {2 * groups} counter + {2 * groups} window keys",
                                     runs, n_flush, "record n, then flush(): end to end")))
        client.close()
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Ratios of net cost per record (the bare loop subtracted), measured in this run."""
    us = {str(r["case"]): float(r["median_us"]) for r in rows}
    base = us["loop alone (builds the arguments)"]
    memory = us["MemoryStore"] - base
    up = us["RedisStore write-behind, Redis up"] - base
    down = us["RedisStore write-behind, Redis down"] - base
    sync = us["redis-py synchronous pipeline"] - base
    return [
        f"- Write-behind hot path: **{up:.1f} us** net per record with Redis up, **{down:.1f} us** with Redis "
        f"down; a synchronous Redis write costs **{sync / up:.0f}x** as much ({sync:.0f} us).",
        f"- Write-behind costs {up / memory:.2f}x MemoryStore's {memory:.1f} us net per record.",
    ]


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    print(f"{'case':62} {'median us':>10} {'min':>9} {'max':>9} {'records/s':>11} {'n':>7}")
    for r in rows:
        print(f"{r['case']:62} {r['median_us']:10.2f} {r['min_us']:9.2f} {r['max_us']:9.2f} "
              f"{r['records_per_s']:11,.0f} {r['n']:7}")
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main(sys.argv[1:])

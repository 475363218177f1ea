"""Child-process bodies for the multi-process RedisStore tests.

Kept in their own light module so ``spawn`` children import little. Every
worker opens its own store (as a gunicorn worker would), reports through a
queue and never raises: a failure is reported as data for the parent to assert.
"""

from __future__ import annotations

import time
from typing import Any

from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

COUNTER_KEY = "exact:{g}:counts"
WINDOW_KEY = "exact:{g}:window"


def _metrics(tel: Telemetry) -> dict[str, float]:
    return {
        "dropped": sample_value(tel, "mlops_store_dropped_total", store="redis") or 0.0,
        "flush_errors": sample_value(tel, "mlops_store_flush_errors_total", store="redis") or 0.0,
    }


def increment_and_append(url: str, prefix: str, writer: int, ops: int, max_len: int,
                         barrier: Any, out: Any) -> None:
    """*ops* increments of (n=1, sum=i) and window appends of [writer, i], then flush."""
    tel = Telemetry()
    store = RedisStore.from_url(url, prefix=prefix, flush_interval=0.005, telemetry=tel)
    errors = 0
    barrier.wait()
    for i in range(ops):
        try:
            store.incr(COUNTER_KEY, {"n": 1.0, "sum": float(i)})
            store.append(WINDOW_KEY, [[writer, i]], max_len=max_len)
        except BaseException:
            errors += 1
    flushed = store.flush(60.0)
    store.close()
    out.put({"writer": writer, "errors": errors, "flushed": flushed, **_metrics(tel)})


def race_compare_and_set(url: str, prefix: str, writer: int, rounds: int, increments: int,
                         barrier: Any, out: Any) -> None:
    """Race on *rounds* fresh documents, then add 1 to a shared document *increments* times by CAS."""
    store = RedisStore.from_url(url, prefix=prefix, telemetry=Telemetry())
    wins = []
    for r in range(rounds):
        barrier.wait()
        wins.append(store.compare_and_set(f"race:{{r{r}}}", {"winner": writer}, expected_version=0))
    done = attempts = 0
    while done < increments:
        attempts += 1
        current = store.get_document("cas:{shared}")
        version = 0 if current is None else current.version
        value = 0 if current is None else current.value
        assert isinstance(value, int)
        if store.compare_and_set("cas:{shared}", value + 1, expected_version=version):
            done += 1
    store.close()
    out.put({"writer": writer, "wins": wins, "attempts": attempts})


def write_until_stopped(url: str, prefix: str, writer: int, max_len: int, started: Any, stop: Any,
                        out: Any) -> None:
    """Write steadily until *stop* is set (the parent kills and restarts Redis meanwhile)."""
    tel = Telemetry()
    store = RedisStore.from_url(url, prefix=prefix, flush_interval=0.02, max_backoff=0.2,
                                socket_timeout=1.0, telemetry=tel)
    errors = 0
    ops = 0
    started.put(writer)
    while not stop.is_set():
        try:
            store.incr(COUNTER_KEY, {"n": 1.0, "sum": float(ops)})
            store.append(WINDOW_KEY, [[writer, ops]], max_len=max_len)
        except BaseException:
            errors += 1
        ops += 1
        time.sleep(0.001)
    flushed = store.flush(60.0)
    store.close()
    out.put({"writer": writer, "ops": ops, "errors": errors, "flushed": flushed, **_metrics(tel)})

"""CounterBuffer: hot-path increments pre-aggregated in process, delivered exactly."""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
import uuid
import weakref

import pytest
import redis

from mlops_otel.stores import CounterBuffer, MemoryStore
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry

from .services import RedisServer

FIELDS = ("n", "sum")


def test_sums_reach_the_store_on_flush() -> None:
    store = MemoryStore()
    buf = CounterBuffer(store, FIELDS, interval=60)
    for i in range(10):
        buf.add("k", (1.0, float(i)))
    buf.add("other", (1.0, 0.5))
    assert store.read_counters("k") == {}  # still in process memory
    buf.flush()
    assert store.read_counters("k") == {"n": 10.0, "sum": 45.0}
    assert store.read_counters("other") == {"n": 1.0, "sum": 0.5}
    buf.flush()  # nothing pending: nothing added twice
    assert store.read_counters("k") == {"n": 10.0, "sum": 45.0}
    buf.close()


def test_background_thread_delivers_without_a_flush_call() -> None:
    store = MemoryStore()
    buf = CounterBuffer(store, FIELDS, interval=0.01)
    buf.add("k", (1.0, 2.0))
    event = threading.Event()
    for _ in range(500):
        if store.read_counters("k"):
            break
        event.wait(0.01)
    assert store.read_counters("k") == {"n": 1.0, "sum": 2.0}
    buf.close()


def test_eight_threads_lose_nothing() -> None:
    store = MemoryStore()
    buf = CounterBuffer(store, FIELDS, interval=0.001)  # flushing concurrently with the adds

    def work() -> None:
        for _ in range(5_000):
            buf.add("k", (1.0, 0.5))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buf.close()
    assert store.read_counters("k") == {"n": 40_000.0, "sum": 20_000.0}


def _child(buf: CounterBuffer, store: MemoryStore, conn: multiprocessing.connection.Connection) -> None:
    buf.add("k", (1.0, 1.0))
    buf.flush()
    conn.send(store.read_counters("k"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_redeliver_the_parents_sums() -> None:
    store = MemoryStore()
    buf = CounterBuffer(store, FIELDS, interval=60)
    buf.add("k", (5.0, 5.0))
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(buf, store, child))
    proc.start()
    assert parent.recv() == {"n": 1.0, "sum": 1.0}  # only the child's own increment
    proc.join(10)
    buf.close()
    assert store.read_counters("k") == {"n": 5.0, "sum": 5.0}


def test_a_store_that_raises_is_reported_not_raised() -> None:
    class Broken(MemoryStore):
        def incr(self, key: str, deltas: object) -> None:  # type: ignore[override]
            raise RuntimeError("down")

    faults: list[BaseException] = []
    buf = CounterBuffer(Broken(), FIELDS, interval=60, on_fault=faults.append)
    buf.add("k", (1.0, 1.0))
    buf.close()
    assert [str(f) for f in faults] == ["down"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fields": ()}, r"fields must be distinct field names, got \(\)"),
        ({"fields": ("a", "a")}, r"fields must be distinct field names, got \('a', 'a'\)"),
        ({"fields": FIELDS, "interval": 0}, r"interval must be a positive number of seconds, got 0"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CounterBuffer(MemoryStore(), **kwargs)  # type: ignore[arg-type]


def test_on_redis_the_stores_flusher_delivers_the_sums_and_the_buffer_starts_no_thread(
        redis_service: RedisServer) -> None:
    """#16: a buffer in front of a RedisStore is flushed by the store's flusher, right before each delivery."""
    def names() -> set[str]:
        return {t.name for t in threading.enumerate()}

    with RedisStore.from_url(redis_service.url, prefix=f"buf-{uuid.uuid4().hex}", telemetry=Telemetry(),
                             flush_interval=0.02) as store:
        buf = CounterBuffer(store, FIELDS, interval=60)  # its own interval is not used: the store's is
        for i in range(10):
            buf.add("k", (1.0, float(i)))
        assert "mlops-otel-redis-flusher" in names()
        assert "mlops-otel-counter-buffer" not in names()
        reader = redis.Redis.from_url(redis_service.url, decode_responses=True)
        deadline = time.monotonic() + 30
        while reader.hgetall(f"{store.prefix}:k") != {"n": "10", "sum": "45"}:
            assert time.monotonic() < deadline, reader.hgetall(f"{store.prefix}:k")
            time.sleep(0.02)
        # A buffer dropped without close() is held weakly by the store: freed, no longer fed.
        ref = weakref.ref(buf)
        del buf
        gc.collect()
        assert ref() is None
        store.flush()

"""RedisStore beyond the contract: many processes, outages, lost replies, forks, URLs.

Every test runs against a real ``redis-server`` started on a free loopback port.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import random
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

from mlops_otel.stores import MemoryStore, StoreError, make_key
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value
from mlops_otel.validation import InvalidValueError

from . import _store_workers as workers
from .services import RedisServer, free_port, redis_cluster, redis_server, require_binary

pytestmark = pytest.mark.integration

SPAWN = mp.get_context("spawn")


def new_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def make_store(tel: Telemetry) -> Iterator[Callable[..., RedisStore]]:
    """Build RedisStores on a URL with a fresh prefix; all are closed after the test."""
    made: list[RedisStore] = []

    def make(url: str, **options: object) -> RedisStore:
        options.setdefault("prefix", new_prefix())
        options.setdefault("telemetry", tel)
        store = RedisStore.from_url(url, **options)  # type: ignore[arg-type]  # options are test-chosen
        made.append(store)
        return store

    yield make
    for store in made:
        store.close(timeout=0.5)


def metric(tel: Telemetry, name: str) -> float:
    return sample_value(tel, name, store="redis") or 0.0


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def assert_newest_suffixes(window: Sequence[object], max_len: int, last_op: dict[int, int]) -> None:
    """A window kept under concurrent appends holds exactly the newest items.

    Each writer appended ``[writer, 0]``, ``[writer, 1]``, ... in order, and the
    store trims from the oldest end of one list. So the window is the last
    *max_len* appends of the global order iff it has *max_len* items and each
    writer's items in it are its own newest ones, contiguous and in order,
    ending with its last append (a lost, duplicated, reordered or wrongly
    trimmed item breaks one of these).
    """
    assert len(window) == max_len
    per_writer: dict[int, list[int]] = {}
    for item in window:
        assert isinstance(item, list)
        writer, i = item
        per_writer.setdefault(writer, []).append(i)
    for writer, seq in per_writer.items():
        last = last_op[writer]
        assert seq == list(range(last - len(seq) + 1, last + 1)), f"writer {writer}: {seq}"
    final = window[-1]
    assert isinstance(final, list)
    assert final[1] == last_op[final[0]]


# ------------------------------------------------------------------ many processes
def test_eight_processes_increment_exactly_and_keep_the_newest_window(redis_service: RedisServer) -> None:
    procs, ops, max_len = 8, 10_000, 64
    prefix = new_prefix()
    barrier, out = SPAWN.Barrier(procs), SPAWN.Queue()
    children = [
        SPAWN.Process(target=workers.increment_and_append,
                      args=(redis_service.url, prefix, w, ops, max_len, barrier, out))
        for w in range(procs)
    ]
    for child in children:
        child.start()
    reports = [out.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert all(r["errors"] == 0 and r["flushed"] and r["dropped"] == 0 for r in reports), reports

    with RedisStore.from_url(redis_service.url, prefix=prefix, telemetry=Telemetry()) as store:
        assert store.read_counters(workers.COUNTER_KEY) == {
            "n": float(procs * ops),
            "sum": float(procs * sum(range(ops))),
        }
        window = store.read_window(workers.WINDOW_KEY)
    assert_newest_suffixes(window, max_len, dict.fromkeys(range(procs), ops - 1))


def test_eight_processes_racing_compare_and_set_have_one_winner(redis_service: RedisServer) -> None:
    procs, rounds, increments = 8, 20, 25
    prefix = new_prefix()
    barrier, out = SPAWN.Barrier(procs), SPAWN.Queue()
    children = [
        SPAWN.Process(target=workers.race_compare_and_set,
                      args=(redis_service.url, prefix, w, rounds, increments, barrier, out))
        for w in range(procs)
    ]
    for child in children:
        child.start()
    reports = [out.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0

    with RedisStore.from_url(redis_service.url, prefix=prefix, telemetry=Telemetry()) as store:
        for r in range(rounds):
            winners = [rep["writer"] for rep in reports if rep["wins"][r]]
            assert len(winners) == 1, f"round {r}: winners {winners}"
            doc = store.get_document(f"race:{{r{r}}}")
            assert doc is not None
            assert doc.version == 1
            assert doc.value == {"winner": winners[0]}
        shared = store.get_document("cas:{shared}")
    # Read-modify-CAS loops lose no update: every success is one increment.
    assert shared is not None
    assert shared.value == procs * increments
    assert shared.version == procs * increments
    assert sum(rep["attempts"] for rep in reports) >= procs * increments


def test_redis_killed_and_restarted_mid_run_loses_nothing(redis_durable: RedisServer) -> None:
    procs, max_len = 4, 50
    prefix = new_prefix()
    started, out, stop = SPAWN.Queue(), SPAWN.Queue(), SPAWN.Event()
    children = [
        SPAWN.Process(target=workers.write_until_stopped,
                      args=(redis_durable.url, prefix, w, max_len, started, stop, out))
        for w in range(procs)
    ]
    for child in children:
        child.start()
    for _ in children:
        started.get(timeout=60)
    time.sleep(0.5)
    redis_durable.kill()  # SIGKILL: in-flight replies are lost, acknowledged writes are in the AOF
    time.sleep(3.0)
    redis_durable.start()  # same port, reloads the AOF
    time.sleep(0.5)
    stop.set()
    reports = [out.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0

    assert all(r["errors"] == 0 for r in reports), reports  # no caller raised
    assert all(r["flushed"] for r in reports), reports
    assert all(r["dropped"] == 0 for r in reports), reports
    assert all(r["flush_errors"] > 0 for r in reports), reports  # every writer lived through the outage
    with RedisStore.from_url(redis_durable.url, prefix=prefix, telemetry=Telemetry()) as store:
        assert store.read_counters(workers.COUNTER_KEY) == {
            "n": float(sum(r["ops"] for r in reports)),
            "sum": float(sum(sum(range(r["ops"])) for r in reports)),
        }
        window = store.read_window(workers.WINDOW_KEY)
    assert_newest_suffixes(window, max_len, {r["writer"]: r["ops"] - 1 for r in reports})


def test_a_cluster_node_killed_and_restarted_loses_nothing(tel: Telemetry) -> None:
    durable = ("--appendonly", "yes", "--appendfsync", "always")
    with redis_cluster(3, durable) as nodes:
        store = RedisStore.from_url(nodes[0].url, prefix=new_prefix(), flush_interval=0.02, max_backoff=0.3,
                                    socket_timeout=1.0, telemetry=tel)
        keys = [make_key("ab", f"g{i}", "stats") for i in range(30)]  # spread over the 3 nodes
        rounds = errors = 0

        def write_for(seconds: float) -> None:
            nonlocal rounds, errors
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for key in keys:
                    try:
                        store.incr(key, {"n": 1})
                    except BaseException:
                        errors += 1
                rounds += 1
                time.sleep(0.002)

        write_for(0.5)
        nodes[2].kill()
        write_for(2.5)  # the cluster notices after cluster-node-timeout (2 s) and reports CLUSTERDOWN
        nodes[2].start()  # same port, same nodes.conf, reloads its AOF
        write_for(0.5)
        assert store.flush(timeout=30)
        assert errors == 0
        assert {key: store.read_counters(key) for key in keys} == {key: {"n": float(rounds)} for key in keys}
        assert metric(tel, "mlops_store_dropped_total") == 0
        assert metric(tel, "mlops_store_flush_errors_total") > 0
        store.close()


# ------------------------------------------------------------------ exactly-once
BUSY_LUA = """
local t0 = redis.call('TIME')
while true do
  local t = redis.call('TIME')
  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > tonumber(ARGV[1]) then break end
end
return 1
"""


def _wait_until_blocked(url: str, timeout: float = 30.0) -> None:
    """Return once the server stopped answering (a script is running): a PING on loopback gets no reply for
    0.5 s, which a loaded machine alone does not explain (and leaves the caller 2.5 s of a 3 s block)."""
    deadline = time.monotonic() + timeout
    while True:
        probe = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=5)
        try:
            probe.ping()
        except redis.exceptions.TimeoutError:
            return  # (the probe's connection, with its unread reply, is dropped)
        finally:
            probe.close()
        assert time.monotonic() < deadline, "the server never blocked"
        time.sleep(0.005)


def test_a_batch_whose_reply_was_lost_is_applied_once(
    redis_fresh: RedisServer, make_store: Callable[..., RedisStore], tel: Telemetry
) -> None:
    store = make_store(redis_fresh.url, socket_timeout=0.3, flush_interval=3600.0)
    store.incr("warm-up", {"n": 1})  # connects and loads the scripts
    assert store.flush()
    store._flusher.stop()  # only flush() sends from here (the flusher's sentinel-check ticks would deliver too)
    raw = redis.Redis.from_url(redis_fresh.url, socket_timeout=10)
    raw.ping()  # connected before the race below starts
    store.incr("k", {"n": 1})
    store.append("w", ["x"], max_len=5)
    # Block the server for 3 s: the flush's pipeline is read by Redis only after
    # the client timed out and hung up, so the batch is applied but its reply is lost.
    blocker = threading.Thread(target=raw.eval, args=(BUSY_LUA, 0, 3_000_000))
    blocker.start()
    _wait_until_blocked(redis_fresh.url)  # not a fixed sleep: under load the script may start late
    assert store.flush(timeout=0.2) is False
    blocker.join()
    wait_until(lambda: raw.hgetall(f"{store.prefix}:k") == {b"n": b"1"})  # applied despite the timeout
    assert store.flush() is True  # the same batch again: acknowledged, not re-applied
    assert store.read_counters("k") == {"n": 1.0}
    assert store.read_window("w") == ["x"]
    assert metric(tel, "mlops_store_flush_errors_total") >= 1


def test_resending_a_frozen_batch_is_a_no_op(redis_service: RedisServer, make_store: Callable[..., RedisStore]) -> None:
    store = make_store(redis_service.url, flush_interval=3600.0)
    delivery = store._delivery
    with delivery.send_lock:  # keeps the flusher thread out
        store.incr("k{g}", {"n": 2, "s": 0.5})
        store.append("w{g}", [1, 2, 3], max_len=2)
        delivery.freeze_locked()
        batch = delivery.inflight
        assert batch is not None
        calls = delivery.calls(batch)
        executor = store._executor
        assert executor.execute(calls) == [1, 1]
        assert executor.execute(calls) == [0, 0]  # a retry of the same batch is skipped
        delivery.inflight = None
        delivery.pending.release(batch.entries)
    assert store.read_counters("k{g}") == {"n": 2.0, "s": 0.5}
    assert store.read_window("w{g}") == [2, 3]


def _wakeups(thread: threading.Thread | None) -> int:
    """The voluntary context switches of *thread* (Linux): each return from a wait is one."""
    assert thread is not None
    assert thread.native_id is not None
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread wake-ups from Linux's /proc")
def test_an_idle_flusher_sleeps_until_its_sentinel_check(
    redis_service: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    store = make_store(redis_service.url, flush_interval=0.01, epoch_interval=0.5)
    store.incr("k", {"n": 1})
    wait_until(lambda: store.read_counters("k") == {"n": 1.0})
    time.sleep(0.3)  # past the tick that finds nothing left (0.01 s): parked
    before = _wakeups(store._flusher.thread)
    time.sleep(1.0)
    # Parked: one wake-up per sentinel check (a GET, so a few switches), not one per flush_interval (100).
    assert _wakeups(store._flusher.thread) - before <= 20
    store.incr("k", {"n": 1})  # a write wakes it: delivered long before the next sentinel check is due
    wait_until(lambda: store.read_counters("k") == {"n": 2.0})


def test_writes_to_a_parked_flusher_are_never_left_waiting(
    redis_service: RedisServer, make_store: Callable[..., RedisStore], tel: Telemetry
) -> None:
    """The flusher parks between writes (its sentinel check 60 s away): every write wakes it, by any path.

    Writes land at random moments around the flusher's park, direct and through a CounterBuffer
    fed by the flusher; each must be delivered without a flush() well before the sentinel check.
    """
    from mlops_otel.stores import CounterBuffer

    store = make_store(redis_service.url, flush_interval=0.005, epoch_interval=60.0)
    buffer = CounterBuffer(store, ("n",))
    rng = random.Random(7)
    for i in range(1, 81):
        time.sleep(rng.uniform(0.0, 0.012))  # it parks after an empty tick (5 ms): sometimes before, sometimes after
        if i % 2:
            store.incr("direct", {"n": 1})
        else:
            buffer.add("buffered", (1.0,))
        want = {"direct": {"n": float((i + 1) // 2)}, "buffered": {"n": float(i // 2)}}
        wait_until(lambda want=want: all(store.read_counters(k) == (v if v["n"] else {})
                                         for k, v in want.items()), timeout=5.0)
    buffer.close()


def test_a_flusher_sends_at_most_one_batch_per_flush_interval_at_any_write_rate(
    redis_fresh: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    """From the review of the park: writes spaced wider than a round trip must not each wake the flusher for a
    delivery of their own (before the fix, 20 writes 50 ms apart cost 20 script calls)."""
    store = make_store(redis_fresh.url, flush_interval=0.5, epoch_interval=60.0)
    store.incr("warm-up", {"n": 1})
    assert store.flush()
    time.sleep(1.5)  # parked (after an empty tick)
    raw = redis.Redis.from_url(redis_fresh.url)
    raw.config_resetstat()
    started = time.monotonic()
    for _ in range(20):
        store.incr("k", {"n": 1})
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert store.flush()
    calls = int(raw.info("commandstats")["cmdstat_evalsha"]["calls"])
    assert calls <= elapsed / 0.5 + 2  # one batch per interval, the first at once, and the final flush()
    assert store.read_counters("k") == {"n": 20.0}


def test_a_flusher_sleeps_between_bursts_of_writes(
    redis_service: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    """#16: a loaded worker's writes come in bursts (its background workers share one schedule).
    Between two bursts the flusher sleeps instead of ticking every *flush_interval*: it delivers
    the burst, ticks once more, finds nothing and parks until the next burst wakes it. Its ticks are
    counted by a feeder (called at every tick, and once more as it parks)."""
    store = make_store(redis_service.url, flush_interval=0.01, epoch_interval=60.0)
    store.incr("k", {"n": 1})
    wait_until(lambda: store.read_counters("k") == {"n": 1.0})
    ticks: list[float] = []

    def count() -> None:
        ticks.append(time.monotonic())

    store.add_feeder(count)
    time.sleep(0.1)
    ticks.clear()
    for n in range(2, 12):
        store.incr("k", {"n": 1})
        wait_until(lambda n=n: store.read_counters("k") == {"n": float(n)})
        time.sleep(0.2)
    # Per burst: the tick that delivers, the one that finds nothing, the park's second look (3);
    # ticking on through the 0.2 s between bursts, or parking only after five empty ticks, is 7 or more.
    assert len(ticks) <= 10 * 3 + 4, len(ticks)


def test_a_write_that_wakes_the_flusher_waits_for_the_rest_of_its_burst(
    redis_service: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    """The first write of a burst wakes the parked flusher, which gathers the burst for _GATHER_S before it
    delivers: the writes of the other background workers on the same beat go out in the same batch."""
    from mlops_otel.stores import _redis

    store = make_store(redis_service.url, flush_interval=0.5, epoch_interval=60.0)
    store.incr("k", {"n": 1})
    assert store.flush()
    delivered: list[float] = []
    store.add_feeder(lambda: delivered.append(time.monotonic()))
    time.sleep(0.7)  # parked
    delivered.clear()
    woken = time.monotonic()
    store.incr("k", {"n": 1})
    wait_until(lambda: store.read_counters("k") == {"n": 2.0})
    assert delivered, "delivered by the flusher"
    assert delivered[0] - woken >= _redis._GATHER_S * 0.9  # not at once (sleeps may end a little early)
    assert delivered[0] - woken < 30.0  # woken by the write, not by the sentinel check (60 s)


def test_a_buffered_write_racing_the_flusher_into_its_park_is_delivered(
    redis_service: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    """The race the park must not lose: a sum handed to a CounterBuffer after the flusher took the
    buffers' sums and before it parked (its wake-up then sees the flusher still awake, so none is
    sent). A feeder registered after the buffer writes it at exactly that moment."""
    from mlops_otel.stores import CounterBuffer

    store = make_store(redis_service.url, flush_interval=0.01, epoch_interval=60.0)
    buffer = CounterBuffer(store, ("n",))
    armed = threading.Event()

    def inject() -> None:  # runs on the flusher, right after the buffer handed over (nothing)
        if armed.is_set():
            armed.clear()
            buffer.add("late", (1.0,))

    store.add_feeder(inject)
    buffer.add("early", (1.0,))
    wait_until(lambda: store.read_counters("early") == {"n": 1.0})
    time.sleep(0.3)  # parked (after an empty tick, 0.01 s)
    armed.set()
    store._flusher.wake()  # a tick of the parked flusher (as its sentinel check's): nothing to send, then the sum
    wait_until(lambda: store.read_counters("late") == {"n": 1.0}, timeout=5.0)
    buffer.close()


def test_hot_path_writes_are_merged_into_one_update_per_key(
    redis_fresh: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    store = make_store(redis_fresh.url, flush_interval=3600.0)
    store.incr("warm-up", {"n": 1})
    assert store.flush()
    store._flusher.stop()  # only flush() sends from here (the flusher's sentinel-check ticks would deliver too)
    raw = redis.Redis.from_url(redis_fresh.url)
    raw.config_resetstat()
    for i in range(1000):
        store.incr("k", {"n": 1, "sum": i})
        store.append("w", [i], max_len=10)
    assert store.flush()
    assert raw.info("commandstats")["cmdstat_evalsha"]["calls"] == 2
    assert store.read_counters("k") == {"n": 1000.0, "sum": float(sum(range(1000)))}
    assert store.read_window("w") == list(range(990, 1000))


# ------------------------------------------------------------------ Redis unreachable
def test_while_redis_is_down_writes_are_kept_bounded_and_delivered_later(
    redis_fresh: RedisServer, make_store: Callable[..., RedisStore], tel: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_store(redis_fresh.url, max_pending=5, flush_interval=3600.0)
    store.incr("warm-up", {"n": 1})
    assert store.flush()
    store._flusher.stop()  # only flush() sends from here (the flusher's sentinel-check ticks would deliver too)
    redis_fresh.stop()
    caplog.set_level(logging.WARNING, logger="mlops_otel.stores")
    for i in range(10):
        store.incr(f"k{i}", {"n": 1})  # one new entry each: 5 fit, 5 are dropped
    for _ in range(100):
        store.incr("k0", {"n": 1})  # merges into a pending entry: never dropped
    assert store.flush(timeout=0.2) is False  # the 5 entries are now the in-flight batch
    for _ in range(100):
        store.incr("k0", {"n": 1})  # a new generation accumulates beside the in-flight batch
    assert metric(tel, "mlops_store_dropped_total") == 5
    drops = [r for r in caplog.records if "dropped a write" in r.getMessage()]
    assert len(drops) == 1  # logged once
    assert store.flush(timeout=0.1) is False  # (the gauge is published by every delivery attempt)
    assert metric(tel, "mlops_store_pending") == 6
    with pytest.raises(StoreError, match="read_counters on key 'k0' failed"):
        store.read_counters("k0")  # decision paths report the outage

    redis_fresh.start()
    assert store.flush(timeout=10)
    assert store.read_counters("k0") == {"n": 201.0}
    assert [store.read_counters(f"k{i}") for i in range(1, 10)] == [{"n": 1.0}] * 4 + [{}] * 5
    assert metric(tel, "mlops_store_pending") == 0


def test_each_failure_kind_is_logged_once_per_outage(
    redis_fresh: RedisServer, make_store: Callable[..., RedisStore], tel: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlops_otel.stores")
    store = make_store(redis_fresh.url, flush_interval=0.01, max_backoff=0.02)
    redis_fresh.stop()
    store.incr("k", {"n": 1})
    wait_until(lambda: metric(tel, "mlops_store_flush_errors_total") >= 5)
    failures = [r for r in caplog.records if "flush failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.WARNING
    redis_fresh.start()
    assert store.flush(timeout=10)
    assert any("delivered pending writes after" in r.getMessage() for r in caplog.records)
    assert store.read_counters("k") == {"n": 1.0}


def test_an_update_redis_rejects_is_dropped_not_retried_forever(
    redis_service: RedisServer, make_store: Callable[..., RedisStore], tel: Telemetry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = make_store(redis_service.url)
    redis.Redis.from_url(redis_service.url).set(f"{store.prefix}:taken", "a string")  # WRONGTYPE for HINCRBYFLOAT
    caplog.set_level(logging.ERROR, logger="mlops_otel.stores")
    for _ in range(3):
        store.incr("taken", {"n": 1})
        store.incr("fine", {"n": 1})
        assert store.flush()  # the rejected key leaves the batch; the rest is delivered
    assert store.read_counters("fine") == {"n": 3.0}
    assert metric(tel, "mlops_store_dropped_total") == 3
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 1


def test_writes_after_close_are_dropped_and_counted(
    redis_service: RedisServer, make_store: Callable[..., RedisStore], tel: Telemetry
) -> None:
    store = make_store(redis_service.url)
    store.incr("k", {"n": 1})
    store.close()
    store.incr("k", {"n": 1})
    store.append("w", [1], max_len=3)
    assert metric(tel, "mlops_store_dropped_total") == 2
    with pytest.raises(StoreError, match="closed"):
        store.read_counters("k")
    with RedisStore.from_url(redis_service.url, prefix=store.prefix, telemetry=Telemetry()) as again:
        assert again.read_counters("k") == {"n": 1.0}  # close() delivered the first write


# ------------------------------------------------------------------ processes and lifetimes
def _child_writes(store: RedisStore, key: str, out: mp.Queue[bool]) -> None:
    for _ in range(100):
        store.incr(key, {"child": 1})
    ok = store.flush(10)
    store.close()
    out.put(ok)


def test_a_forked_child_delivers_its_own_writes_only(
    redis_service: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    store = make_store(redis_service.url, flush_interval=3600.0)
    store.incr("k", {"parent": 1})
    store.flush()
    for _ in range(10):
        store.incr("k", {"parent": 1})  # pending in the parent when it forks
    fork = mp.get_context("fork")
    out: mp.Queue[bool] = fork.Queue()
    child = fork.Process(target=_child_writes, args=(store, "k", out))
    child.start()
    assert out.get(timeout=30) is True
    child.join(timeout=30)
    assert child.exitcode == 0
    assert store.flush()
    # Neither copy of the parent's pending writes was delivered twice, and the
    # child's writes were not mistaken for retries of the parent's batches.
    assert store.read_counters("k") == {"parent": 11.0, "child": 100.0}


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_an_unreferenced_store_is_collected_and_its_thread_ends(redis_service: RedisServer, kind: str) -> None:
    store: MemoryStore | RedisStore
    thread: threading.Thread | None = None
    if kind == "memory":
        store = MemoryStore(telemetry=Telemetry())
    else:
        store = RedisStore.from_url(redis_service.url, prefix=new_prefix(), telemetry=Telemetry())
    store.incr("k", {"n": 1})
    assert store.flush()
    if isinstance(store, RedisStore):
        thread = store._flusher.thread
        assert thread is not None
    ref = weakref.ref(store)
    del store
    wait_until(lambda: gc.collect() >= 0 and ref() is None)
    if thread is not None:
        thread.join(timeout=10)
        assert not thread.is_alive()


# ------------------------------------------------------------------ URLs and deployments
def test_prefixes_isolate_deployments_on_one_redis(
    redis_service: RedisServer, make_store: Callable[..., RedisStore]
) -> None:
    blue, green = make_store(redis_service.url), make_store(redis_service.url)
    blue.incr("k", {"n": 1})
    green.incr("k", {"n": 5})
    assert blue.flush()
    assert green.flush()
    assert blue.read_counters("k") == {"n": 1.0}
    assert green.read_counters("k") == {"n": 5.0}
    assert blue.list_keys("") == ["k"]


def test_password_urls(make_store: Callable[..., RedisStore], tel: Telemetry) -> None:
    with redis_server(("--requirepass", "s3cr:et")) as server:
        url = f"redis://:s3cr%3Aet@127.0.0.1:{server.port}/0"
        store = make_store(url)
        store.incr("k", {"n": 1})
        assert store.flush()
        assert store.read_counters("k") == {"n": 1.0}
        assert "s3cr" not in repr(store)

        wrong = make_store(f"redis://:nope@127.0.0.1:{server.port}/0", flush_interval=0.01)
        wrong.incr("k", {"n": 1})  # never raises
        with pytest.raises(StoreError):
            wrong.read_counters("k")
        assert wrong.flush(timeout=0.2) is False


def test_rediss_urls_speak_tls(tmp_path: Path, make_store: Callable[..., RedisStore]) -> None:
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    server = RedisServer(port, tmp_path, (
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--requirepass", "pw",
    ))
    server.start()
    try:
        store = make_store(f"rediss://:pw@127.0.0.1:{port}/0?ssl_ca_certs={cert}")
        store.incr("k", {"n": 1})
        assert store.flush()
        assert store.read_counters("k") == {"n": 1.0}
        plain = make_store(f"redis://:pw@127.0.0.1:{port}/0", socket_timeout=0.5)
        with pytest.raises(StoreError):
            plain.read_counters("k")  # the server speaks TLS only
    finally:
        server.stop()


def test_cluster_is_detected_from_the_url(redis_cluster_nodes: list[RedisServer],
                                         make_store: Callable[..., RedisStore]) -> None:
    store = make_store(redis_cluster_nodes[1].url)
    store.incr("{a}k", {"n": 1})
    store.incr("{b}k", {"n": 2})
    assert store.flush()
    assert store.read_counters("{b}k") == {"n": 2.0}
    assert store._is_cluster is True


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("flush_interval", 0, "flush_interval must be a positive finite number, got 0"),
        ("max_pending", 0, "max_pending must be an int >= 1, got 0"),
        ("max_batch", 1.5, "max_batch must be an int >= 1, got 1.5"),
        ("prefix", "a{b}", "prefix must be a non-empty string without"),
        ("cluster", "yes", "cluster must be None \\(detect\\), True or False, got 'yes'"),
    ],
)
def test_options_are_validated(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore.from_url("redis://localhost:6379/0", **{option: value})  # type: ignore[arg-type]


def test_url_scheme_is_validated_without_leaking_the_password() -> None:
    with pytest.raises(InvalidValueError, match="url must be a URL starting with redis://") as info:
        RedisStore.from_url("http://user:hunter2@host:1/0")
    assert "hunter2" not in str(info.value)
    assert info.value.field == "url"
    assert "hunter2" not in repr(info.value.value)


def test_the_package_imports_without_redis_py() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import mlops_otel.stores as s\n"
        "s.MemoryStore().incr('k', {'n': 1})\n"
        "try:\n"
        "    s.RedisStore\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'mlops-otel[redis]'" in result.stdout

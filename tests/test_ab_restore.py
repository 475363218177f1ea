"""#11: a Redis restarted empty (or flushed) gets the running A/B tests back from the workers that know them.

On a real redis-server. Before the fix the test documents and the model-type slot stayed gone: every
worker served the champion to the treatment's users and ``evaluate_test`` raised ``ABTestNotFoundError``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from mlops_otel.ab import ABTestConfig, ABTestManager, ABTestState
from mlops_otel.registry import ModelRegistry
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer

pytestmark = pytest.mark.integration

TEST = "gnn_restore"
DOC_KEY = "ab:{" + TEST + "}:test"
SLOT_KEY = "ab.model:{gnn}:active"


def _wait(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


class Worker:
    """One runtime's parts: its own store connection, registry and A/B manager (a worker process)."""

    def __init__(self, server: RedisServer, prefix: str, tel: Telemetry, epoch_interval: float = 0.2) -> None:
        self.store = RedisStore.from_url(server.url, prefix=prefix, flush_interval=0.01, epoch_interval=epoch_interval,
                                         telemetry=tel)
        self.registry = ModelRegistry(self.store, telemetry=tel, refresh_interval=0.2)
        self.ab = ABTestManager(self.store, self.registry, telemetry=tel, refresh_interval=0.2,
                                sync_interval=0.2)

    def close(self) -> None:
        self.ab.close(timeout=2.0)
        self.store.close()


@pytest.fixture
def prefix() -> str:
    return f"abrestore-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=[0.2, 1.5], ids=["detected-first", "refreshed-first"])
def workers(redis_fresh: RedisServer, prefix: str,
            request: pytest.FixtureRequest) -> Iterator[tuple[Telemetry, Worker, Worker]]:
    """Two workers; with the slower sentinel check their views find the test gone before the loss is noticed."""
    tel = Telemetry()
    a, b = (Worker(redis_fresh, prefix, tel, request.param) for _ in range(2))
    try:
        yield tel, a, b
    finally:
        a.close()
        b.close()


def _start(a: Worker, b: Worker) -> dict[str, str]:
    a.registry.register("gnn", "v1")
    a.registry.register("gnn", "v2")
    a.ab.start_test(ABTestConfig(name=TEST, model_type="gnn", control_version="v1", treatment_version="v2",
                                 treatment_traffic_pct=50.0, min_samples=10))
    b.ab.watch("gnn")
    _wait(lambda: b.ab.active_test("gnn") is not None)
    users = {f"u{i}": a.ab.assign_variant("gnn", f"u{i}")["name"] for i in range(40)}
    assert set(users.values()) == {"control", "treatment"}
    _wait(lambda: a.store._epoch is not None and b.store._epoch is not None)  # the sentinel was seen once
    return users


def _doc(store: RedisStore, key: str) -> Any:
    return store.get_document(key)


def test_running_test_is_restored_once_and_keeps_serving(redis_fresh: RedisServer,
                                                         workers: tuple[Telemetry, Worker, Worker],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    tel, a, b = workers
    users = _start(a, b)
    for user, variant in users.items():  # results before the loss, delivered by both workers
        (a if user < "u2" else b).ab.record_result(TEST, variant, 10.0, 0.8, False)
    assert a.ab.flush()
    assert b.ab.flush()
    caplog.set_level(logging.WARNING, logger="mlops_otel.ab")
    redis_fresh.kill()
    redis_fresh.start()  # no persistence: empty
    # Both workers detect the loss within one sentinel period of each other and restore concurrently.
    _wait(lambda: _doc(a.store, DOC_KEY) is not None and _doc(a.store, SLOT_KEY) is not None)
    _wait(lambda: sample_value(tel, "mlops_store_state_lost_total", store="redis") == 2.0)
    doc, slot = _doc(a.store, DOC_KEY), _doc(a.store, SLOT_KEY)
    assert doc.version == 1  # created once, never overwritten by the second worker
    assert doc.value["state"] == "active"
    assert doc.value["config"]["treatment_version"] == "v2"
    assert slot.value["test"] == TEST
    restored = [r for r in caplog.records if "restored the running A/B tests" in r.getMessage()]
    assert len(restored) == 1, [r.getMessage() for r in restored]  # logged by the one worker that wrote it

    for worker in (a, b):  # every user keeps its arm, on every worker
        _wait(lambda w=worker: all(w.ab.assign_variant("gnn", u)["name"] == v for u, v in users.items()))
        assert worker.ab.get_test(TEST).state is ABTestState.ACTIVE
    for i, (user, variant) in enumerate(users.items()):
        worker = a if i % 2 else b
        assert worker.ab.assign_variant("gnn", user)["version"] == ("v2" if variant == "treatment" else "v1")
        worker.ab.record_result(TEST, variant, 20.0, 0.9, False)
    b.ab.flush()  # b's results delivered (a's are flushed by the decision itself)
    control, treatment = a.ab.results(TEST)
    # Live workers republish their cumulative sums: the results from before the loss are back too.
    assert (control.n, treatment.n) == (2 * list(users.values()).count("control"),
                                        2 * list(users.values()).count("treatment"))
    result = a.ab.evaluate_test(TEST)
    assert result.n_control + result.n_treatment + result.excluded_control + result.excluded_treatment == 2 * len(users)
    assert [e["decision"] for e in a.ab.evaluation_history(TEST)] == [result.decision.value]


def test_a_late_restore_never_overwrites_what_was_written_since(redis_fresh: RedisServer,
                                                                workers: tuple[Telemetry, Worker, Worker]) -> None:
    tel, a, b = workers
    _start(a, b)
    redis_fresh.kill()
    redis_fresh.start()
    _wait(lambda: _doc(a.store, DOC_KEY) is not None and _doc(a.store, SLOT_KEY) is not None)
    _wait(lambda: sample_value(tel, "mlops_store_state_lost_total", store="redis") == 2.0)
    # b finishes the test after the loss; a still believes it runs (its view is refreshed in the background).
    assert b.ab.finalize_test(TEST, "rollback", reason="restored, then rolled back")
    done = _doc(a.store, DOC_KEY)
    # Losing only the sentinel makes both workers run their restore again, concurrently: the newer
    # document and the released slot must survive it.
    client = redis.Redis.from_url(redis_fresh.url)
    try:
        assert client.delete(f"{a.store.prefix}#epoch") == 1
    finally:
        client.close()
    _wait(lambda: sample_value(tel, "mlops_store_state_lost_total", store="redis") == 4.0)
    time.sleep(0.5)  # let both listeners finish
    after = _doc(a.store, DOC_KEY)
    assert (after.version, after.value) == (done.version, done.value)
    assert after.value["state"] == "rolled_back"
    assert _doc(a.store, SLOT_KEY).value["test"] is None
    _wait(lambda: a.ab.assign_variant("gnn", "u1")["test"] is None)  # a learns the newer state, not its own


def test_many_workers_restoring_at_once_write_one_document(redis_fresh: RedisServer,
                                                           workers: tuple[Telemetry, Worker, Worker]) -> None:
    _, a, b = workers
    _start(a, b)
    for w in (a, b):  # stop the automatic detection from racing the explicit one below
        w.store.epoch_interval = 3600.0
    client = redis.Redis.from_url(redis_fresh.url)
    try:
        client.flushall()
    finally:
        client.close()
    go = threading.Barrier(8)

    def restore(w: Worker) -> None:
        go.wait()
        w.ab._state_lost()  # what the store calls on each worker when it finds the sentinel gone

    threads = [threading.Thread(target=restore, args=(w,)) for w in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = _doc(a.store, DOC_KEY)
    assert doc is not None
    assert doc.version == 1
    assert _doc(a.store, SLOT_KEY).version == 1

"""#11 item 5: a dead worker's gauges leave the fleet view (its counters stay); CLI decisions reach /metrics."""

from __future__ import annotations

import signal
import time
import uuid

import attrs
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_otel import FleetMetrics, Runtime, semconv
from mlops_otel.cli import main
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer, uvicorn_process

pytestmark = pytest.mark.integration

#: FleetMetrics' defaults, which a service built by Runtime.from_env uses: publish every interval, TTL 3 x it + 10 s.
FLEET_INTERVAL_S: float = attrs.fields(FleetMetrics).interval.default
FLEET_TTL_S = 3 * FLEET_INTERVAL_S + 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_recycled_workers_documents_are_folded_on_redis(
        topology: str, request: pytest.FixtureRequest) -> None:
    """Workers recycled (gunicorn ``max_requests``) leave documents that are folded into one and deleted on a
    real Redis, standalone and Cluster: the keys stop growing, no count is lost, a resumed worker counts once."""
    url = (request.getfixturevalue("redis_service").url if topology == "standalone"
           else request.getfixturevalue("redis_cluster_nodes")[0].url)
    prefix = "fold" + uuid.uuid4().hex[:8]
    clock = Clock()
    stores = [RedisStore.from_url(url, prefix=prefix) for _ in range(3)]
    fleets: list[tuple[FleetMetrics, Telemetry]] = []
    for store in stores:
        tel = Telemetry()
        fleets.append((FleetMetrics(store, tel, interval=1.0, ttl=5.0, retire_after=30.0, clock=clock), tel))
        tel.use_exposition_source(fleets[-1][0].fleet_snapshot)
    (live, live_tel), (other, other_tel), (_, paused_tel) = fleets
    head = "telemetry:{fleet}:"

    def total(tel: Telemetry) -> float | None:
        return sample_value(tel, "diagnosis_requests_total", status="success", model_version="v1")

    try:
        for n in range(1, 6):  # five short-lived workers, each with its own store as a process would have
            with RedisStore.from_url(url, prefix=prefix) as store:
                tel = Telemetry()
                tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), n)
                assert FleetMetrics(store, tel, clock=clock).publish()
        paused_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 100)
        for fleet, _ in (*fleets, *fleets):
            assert fleet.refresh()
        assert len(stores[0].list_keys(head)) == 8
        assert total(live_tel) == 115.0
        for _ in range(50):  # 'paused' stops too; 'live' and 'other' go on refreshing every second
            clock.now += 1.0
            for fleet in (live, other):
                assert fleet.refresh()
        assert len(stores[0].list_keys(head)) == 2  # six documents folded into one and deleted
        assert total(live_tel) == total(other_tel) == 115.0
        paused_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 7)  # it resumes
        for fleet, _ in (*fleets, *fleets):
            assert fleet.refresh()
        assert total(live_tel) == total(other_tel) == total(paused_tel) == 122.0
        assert len(stores[0].list_keys(head)) == 3
    finally:
        for fleet, _ in fleets:
            fleet.close()
        for store in stores:
            store.close()


def test_dead_worker_gauges_expire_its_counters_stay(redis_service: RedisServer) -> None:
    """0.1: after a restart the fleet view showed two champions (the dead worker's hash never expired)."""
    prefix = "fl" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(redis_service.url, prefix=prefix)
    clock = Clock()
    old_tel, new_tel = Telemetry(), Telemetry()
    old = FleetMetrics(store, old_tel, interval=1.0, ttl=5.0, clock=clock)
    new = FleetMetrics(store, new_tel, interval=1.0, ttl=5.0, clock=clock)
    try:
        old_tel.set(semconv.MODEL_CHAMPION, ("gnn", "v1"), 1.0)
        old_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 5)
        assert old.publish()  # the old worker dies without closing (kill -9)
        new_tel.set(semconv.MODEL_CHAMPION, ("gnn", "v2"), 1.0)
        new_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v2"), 2)
        new.start()
        assert new.refresh()
        # Within the TTL the old worker may still be alive: its gauge is shown.
        assert sample_value(new_tel, "model_champion", model_type="gnn", model_version="v1") == 1.0
        clock.now += 6.0  # the old worker never renewed its snapshot
        assert new.refresh()
        assert sample_value(new_tel, "model_champion", model_type="gnn", model_version="v1") is None
        assert sample_value(new_tel, "model_champion", model_type="gnn", model_version="v2") == 1.0
        assert sample_value(new_tel, "diagnosis_requests_total", status="success", model_version="v1") == 5.0
        # A worker that resumes renews its TTL with its next publish; the others re-read a document whose
        # TTL ran out every expired_recheck seconds (30 by default), and then show its gauges again.
        clock.now += 30.0
        assert old.refresh()
        assert new.refresh()
        assert sample_value(new_tel, "model_champion", model_type="gnn", model_version="v1") == 1.0
    finally:
        new.close()
        store.close()


def test_cli_decisions_are_exported_by_the_service_sharing_the_store(
        redis_service: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """0.1: decisions made with `mlops-otel --store ...` never reached any /metrics."""
    prefix = "fl" + uuid.uuid4().hex[:8]
    service = Runtime.create(store=redis_service.url, store_prefix=prefix, fleet_metrics=True)
    assert service.fleet is not None
    try:
        base = ["--store", redis_service.url, "--store-prefix", prefix]
        for argv in (["registry", "register", "gnn", "v1"], ["registry", "register", "gnn", "v2"],
                     ["ab", "start", "--name", "t1", "--model-type", "gnn", "--control", "v1", "--treatment", "v2"],
                     ["ab", "evaluate", "t1"]):
            assert main([*base, *argv]) == 0, capsys.readouterr().err
        assert service.fleet.refresh()
        assert sample_value(service.telemetry, "ab_decisions_total", test="t1", decision="continue") == 1.0
    finally:
        service.close()


def test_fleet_totals_never_go_back_when_the_store_loses_a_document(redis_fresh: RedisServer) -> None:
    """A flushed (or restarted empty) store dropped a dead worker's counters from the totals."""
    prefix = "fl" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(redis_fresh.url, prefix=prefix)
    dead_tel, live_tel = Telemetry(), Telemetry()
    dead = FleetMetrics(store, dead_tel, interval=1.0)
    live = FleetMetrics(store, live_tel, interval=1.0)
    live_tel.use_exposition_source(live.fleet_snapshot)
    try:
        dead_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 5)
        assert dead.publish()  # then killed: it never publishes again
        live_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 2)
        assert live.refresh()
        assert sample_value(live_tel, "diagnosis_requests_total", status="success", model_version="v1") == 7.0
        import redis

        redis.Redis.from_url(redis_fresh.url).flushall()
        assert live.refresh()  # republishes its own; the dead worker's document is gone from the store
        assert sample_value(live_tel, "diagnosis_requests_total", status="success", model_version="v1") == 7.0
    finally:
        live.close()
        store.close()


def _requests_total(url: str) -> float:
    """The fleet's ``diagnosis_requests_total``, summed over its labels, as *url*'s ``/metrics`` serves it."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "diagnosis_requests_total")


def _post(url: str, ids: list[str], n: int) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            status = client.post("/diagnosis/create", json={"equipment_id": ids[i % len(ids)],
                                                            "user_id": f"u{i}"}).status_code
            assert status in (200, 503), status  # 503: the example GNN's simulated failures, counted too


def _settles_at(url: str, expected: float, timeout: float = 60.0) -> None:
    """Wait until *url*'s fleet total is *expected*, then check it stays there for two more fleet refreshes
    (a worker counted twice would push it above)."""
    deadline = time.monotonic() + timeout
    while (total := _requests_total(url)) != expected:
        assert total < expected, f"fleet total {total} above the {expected} requests made"
        assert time.monotonic() < deadline, f"fleet total {total}, expected {expected}"
        time.sleep(0.25)
    time.sleep(2 * FLEET_INTERVAL_S + 1.0)
    assert _requests_total(url) == expected


def test_a_worker_paused_past_its_ttl_is_counted_once_when_it_resumes(redis_service: RedisServer) -> None:
    """Two services on one Redis store, fleet view on. One is SIGSTOPped for longer than its fleet TTL (a hung
    host): the other's view keeps its requests (counters stay when a snapshot expires) and counts its own; once
    resumed it publishes again, and its later requests are added once, never its earlier ones a second time."""
    env = {"MLOPS_OTEL_STORE_URL": redis_service.url, "MLOPS_OTEL_STORE_PREFIX": f"pause-{uuid.uuid4().hex[:8]}"}
    app = "examples.diagnosis_service.app:app"
    with uvicorn_process(app, env=env) as (a, _), uvicorn_process(app, env=env) as (b, b_proc):
        ids = httpx.get(f"{a}/equipment", timeout=30).json()
        _post(a, ids, 20)
        _post(b, ids, 30)
        _settles_at(a, 50)
        b_proc.send_signal(signal.SIGSTOP)
        try:
            _post(a, ids, 10)
            time.sleep(FLEET_TTL_S + 2 * FLEET_INTERVAL_S)  # b's snapshot has expired in a's view
            _settles_at(a, 60)
        finally:
            b_proc.send_signal(signal.SIGCONT)
        _post(b, ids, 15)
        _settles_at(a, 75)
        _settles_at(b, 75)

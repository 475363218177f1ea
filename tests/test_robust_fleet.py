"""#11 item 5: a dead worker's gauges leave the fleet view (its counters stay); CLI decisions reach /metrics."""

from __future__ import annotations

import uuid

import pytest

from mlops_otel import FleetMetrics, Runtime, semconv
from mlops_otel.cli import main
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


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
        # A live worker renews its TTL with every publish, so it never expires.
        clock.now += 6.0
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

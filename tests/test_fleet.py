"""FleetMetrics: one /metrics view summed over every worker sharing a store."""

from __future__ import annotations

from typing import Any

import pytest

from mlops_otel import FleetMetrics, Runtime, semconv
from mlops_otel.stores import MemoryStore, make_key
from mlops_otel.telemetry import Telemetry, merge_snapshots, snapshot_from_json, snapshot_to_json
from mlops_otel.testing import sample_value


def test_json_roundtrip_preserves_every_family() -> None:
    tel = Telemetry()
    tel.record_gnn_metrics("v1", 12.0, 0.4, 0.9)
    tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 3)
    tel.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.2)
    snap = tel.snapshot()
    assert snapshot_from_json(snapshot_to_json(snap)) == snap


def test_merge_adds_counters_and_histograms_and_takes_latest_gauge() -> None:
    a, b = Telemetry(), Telemetry()
    a.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 2)
    b.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 5)
    a.record(semconv.GNN_CONFIDENCE, ("v1",), 0.95)
    b.record(semconv.GNN_CONFIDENCE, ("v1",), 0.5)
    a.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.1)
    b.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.4)
    merged = {f.spec.name: f for f in merge_snapshots([a.snapshot(), b.snapshot()])}
    assert merged["diagnosis_requests"].series[0].value == 7
    conf = merged["gnn_confidence"].series[0]
    assert conf.count == 2
    assert conf.sum == pytest.approx(1.45)
    assert (conf.min, conf.max) == (0.5, 0.95)
    assert merged["model_drift_score"].series[0].value == 0.4  # b reported last


def test_every_worker_serves_the_fleet_totals() -> None:
    store = MemoryStore()
    workers = [Telemetry() for _ in range(3)]
    fleets = [FleetMetrics(store, t, interval=60) for t in workers]
    for f in fleets:
        f.start()
    try:
        for i, tel in enumerate(workers):
            for _ in range(i + 1):
                tel.record_gnn_metrics("v1", 10.0, 0.3, 0.9)
        for f in fleets:
            f.publish()
        for f in fleets:
            assert f.refresh()
        for tel in workers:  # whichever worker is scraped answers with 1 + 2 + 3
            assert sample_value(tel, "gnn_confidence_count", model_version="v1") == 6.0
        workers[0].record_gnn_metrics("v1", 10.0, 0.3, 0.9)
        # The scraped worker's own latest counts are always included.
        assert sample_value(workers[0], "gnn_confidence_count", model_version="v1") == 7.0
    finally:
        for f in fleets:
            f.close()
    # Closed: back to the local view.
    assert sample_value(workers[1], "gnn_confidence_count", model_version="v1") == 2.0


def test_a_scrape_does_no_store_io() -> None:
    class Hanging(MemoryStore):
        def list_keys(self, prefix: str) -> list[str]:
            raise AssertionError("a scrape must not read the store")

    tel = Telemetry()
    fleet = FleetMetrics(Hanging(), tel, interval=60)
    tel.use_exposition_source(fleet.fleet_snapshot)
    tel.record_gnn_metrics("v1", 10.0, 0.3, 0.9)
    assert sample_value(tel, "gnn_confidence_count", model_version="v1") == 1.0
    assert not fleet.refresh()  # the background refresh fails: counted, the last view is kept
    assert sample_value(tel, "mlops_telemetry_errors_total", reason="fleet_refresh") == 1.0


def test_runtime_enables_fleet_metrics_only_for_shared_stores() -> None:
    rt = Runtime.create()
    assert rt.fleet is None
    rt.close()
    rt = Runtime.create(fleet_metrics=True)
    assert rt.fleet is not None
    rt.close()


def test_bad_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"interval must be a positive number of seconds, got 0"):
        FleetMetrics(MemoryStore(), Telemetry(), interval=0)


def test_bad_expired_recheck_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"expired_recheck must be a positive number of seconds, got 0"):
        FleetMetrics(MemoryStore(), Telemetry(), expired_recheck=0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_stopped_workers_document_is_fetched_again_only_every_expired_recheck() -> None:
    """Workers recycled often leave many stopped workers' documents: each refresh lists them, but re-reads one
    whose TTL ran out only every ``expired_recheck`` seconds (its counters stay in the view meanwhile), and a
    worker that resumes publishing is seen again at the next re-read."""
    fetched: list[str] = []

    class Counting(MemoryStore):
        def get_document(self, key: str) -> Any:
            fetched.append(key)
            return super().get_document(key)

    store, clock = Counting(), _Clock()
    stopped_tel, live_tel = Telemetry(), Telemetry()
    stopped = FleetMetrics(store, stopped_tel, interval=1.0, ttl=5.0, clock=clock)
    live = FleetMetrics(store, live_tel, interval=1.0, ttl=5.0, expired_recheck=30.0, clock=clock)
    key = make_key("telemetry", "fleet", stopped.worker_id)
    stopped_tel.set(semconv.MODEL_CHAMPION, ("gnn", "v1"), 1.0)
    stopped_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 5)
    assert stopped.publish()

    def refresh_and_total() -> float | None:
        fetched.clear()
        assert live.refresh()
        return sample_value(live_tel, "diagnosis_requests_total", status="success", model_version="v1")

    live_tel.use_exposition_source(live.fleet_snapshot)
    assert refresh_and_total() == 5.0
    assert key in fetched
    assert sample_value(live_tel, "model_champion", model_type="gnn", model_version="v1") == 1.0
    for _ in range(3):  # within its TTL: read every refresh (its worker may be publishing)
        clock.now += 1.0
        assert refresh_and_total() == 5.0
        assert key in fetched
    clock.now += 3.0  # TTL ran out (last read 3 s ago)
    for _ in range(26):
        assert refresh_and_total() == 5.0  # its counters stay ...
        assert key not in fetched  # ... and it is not read again
        assert sample_value(live_tel, "model_champion", model_type="gnn", model_version="v1") is None
        clock.now += 1.0
    stopped_tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 3)  # its worker resumes
    assert stopped.publish()
    clock.now += 2.0  # 31 s after the last read
    assert refresh_and_total() == 8.0
    assert key in fetched
    assert sample_value(live_tel, "model_champion", model_type="gnn", model_version="v1") == 1.0
    live.close()

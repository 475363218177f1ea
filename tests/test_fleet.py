"""FleetMetrics: one /metrics view summed over every worker sharing a store."""

from __future__ import annotations

import pytest

from mlops_otel import FleetMetrics, Runtime, semconv
from mlops_otel.stores import MemoryStore
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

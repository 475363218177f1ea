"""DriftMonitor's background checker keeps the statistics off the request path."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlops_otel.drift import DriftMonitor
from mlops_otel.drift._monitor import CHECK_FRACTION, MAX_SKIPPED_ROUNDS
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value


def test_gauges_follow_traffic_without_a_report_call() -> None:
    tel = Telemetry()
    monitor = DriftMonitor(MemoryStore(), telemetry=tel, check_interval=0.05)
    detector = monitor.get_detector("gnn", "v1")
    assert detector.check_every is None
    assert detector.background_checks
    rng = np.random.default_rng(0)
    detector.set_reference(anomaly_scores=rng.beta(2, 5, 2_000), confidences=rng.beta(9, 1, 2_000))
    for score, conf in zip(rng.beta(5, 2, 1_000), rng.beta(9, 1, 1_000), strict=True):  # shifted scores
        detector.add_production_sample(float(score), float(conf))
    deadline = time.monotonic() + 10
    while sample_value(tel, "model_drift_alert", model_type="gnn", model_version="v1") != 1.0:
        assert time.monotonic() < deadline, "the background check never raised the alert gauge"
        time.sleep(0.02)
    score = sample_value(tel, "model_drift_score", model_type="gnn", model_version="v1")
    assert score is not None
    assert score > 0.3
    monitor.close()


def test_without_the_checker_nothing_runs_in_the_background() -> None:
    tel = Telemetry()
    monitor = DriftMonitor(MemoryStore(), telemetry=tel, check_interval=None)
    detector = monitor.get_detector("gnn", "v1")
    assert not detector.background_checks
    for _ in range(600):
        detector.add_production_sample(0.5, 0.9)
    time.sleep(0.1)
    assert sample_value(tel, "model_drift_score", model_type="gnn", model_version="v1") is None
    monitor.close()


def test_bad_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"check_interval must be a positive number of seconds or None, got 0"):
        DriftMonitor(MemoryStore(), check_interval=0)


def test_a_check_waits_for_enough_new_samples_but_every_round_delivers_them() -> None:
    """#16: the checker evaluates after 5% of the window is new (or after five rounds); samples go out every round."""
    store = MemoryStore()
    monitor = DriftMonitor(store, telemetry=Telemetry(), window_size=1000, check_interval=3600)  # rounds by hand
    detector = monitor.get_detector("gnn", "v1")
    rng = np.random.default_rng(0)
    detector.set_reference(anomaly_scores=rng.beta(2, 5, 2_000), confidences=rng.beta(9, 1, 2_000))

    def add(n: int) -> None:
        for _ in range(n):
            detector.add_production_sample(0.5, 0.9)

    add(100)
    monitor.check_all()  # the first round checks
    first = detector.last_report
    assert first is not None
    assert first.production_samples == 100
    few = int(1000 * CHECK_FRACTION) - 1
    for round_ in range(1, MAX_SKIPPED_ROUNDS):
        add(few // MAX_SKIPPED_ROUNDS)
        monitor.check_all()
        assert detector.last_report is first, f"checked in round {round_} with too few new samples"
        # ... but what arrived is at the store (delivered as a check would)
        assert len(store.read_window("drift:{gnn:v1}:scores")) == 100 + round_ * (few // MAX_SKIPPED_ROUNDS)
    add(1)
    monitor.check_all()  # the fifth round with new samples checks whatever their number
    late = detector.last_report
    assert late is not first
    assert late is not None
    add(int(1000 * CHECK_FRACTION))
    monitor.check_all()  # enough new samples: checked at once
    done = detector.last_report
    assert done is not late
    monitor.check_all()  # nothing new: nothing to do
    assert detector.last_report is done
    monitor.close()

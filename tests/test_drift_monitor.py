"""DriftMonitor's background checker keeps the statistics off the request path."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlops_otel.drift import DriftMonitor
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

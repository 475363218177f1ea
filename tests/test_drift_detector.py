"""DriftDetector and DriftMonitor: hot path, reference, reports, alerting, sharing through stores."""

from __future__ import annotations

import gc
import json
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings

from mlops_otel.drift import DriftDetector, DriftLevel, DriftMonitor, DriftReport, ks_2samp
from mlops_otel.registry import ModelRegistry
from mlops_otel.stores import MemoryStore, StateStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer
from .strategies import drift_outputs

# A reference whose KS distance to itself shifted by d is d / 0.5 (a uniform grid on [0, 0.5]), in a
# random arrival order: sorted arrivals would be perfectly serially dependent, and worth ~1 sample.
GRID = np.random.default_rng(17).permutation(np.linspace(0.0, 0.5, 1000))
CONF = np.random.default_rng(18).permutation(np.linspace(0.85, 0.95, 1000))


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def store(tel: Telemetry) -> MemoryStore:
    return MemoryStore(telemetry=tel)


def make(store: StateStore, tel: Telemetry, version: str = "v2.1.0", **options: Any) -> DriftDetector:
    options.setdefault("check_every", None)
    return DriftDetector("gnn", version, store=store, telemetry=tel, **options)


def shifted(d: float) -> np.ndarray:
    """Scores whose KS distance to GRID is about ``d / 0.5``."""
    return np.clip(GRID + d, 0.0, 1.0)


def gauge(tel: Telemetry, name: str, version: str = "v2.1.0") -> float | None:
    return sample_value(tel, name, model_type="gnn", model_version=version)


def invalid_count(tel: Telemetry, label: str) -> float:
    return sample_value(tel, "mlops_invalid_measurements_total", metric=label) or 0.0


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(("options", "message"), [
    ({"threshold": 1.5}, r"threshold must be a number in \(0, 1\], got 1.5"),
    ({"threshold": 0.0}, r"threshold must be a number in \(0, 1\], got 0.0"),
    ({"clear_threshold": 0.35}, r"clear_threshold must be <= threshold \(0.3\), got 0.35"),
    ({"window_size": 1}, r"window_size must be an int >= 2, got 1"),
    ({"window_size": 100.0}, r"window_size must be an int >= 2, got 100.0"),
    ({"min_samples": 2000}, r"min_samples must be <= window_size \(1000\), got 2000"),
    ({"reference_size": 1}, r"reference_size must be an int >= 2, got 1"),
    ({"check_every": 0}, r"check_every must be an int >= 1, got 0"),
    ({"alpha": 1.0}, r"alpha must be a number in \(0, 1\), got 1.0"),
    ({"warning_threshold": -0.1}, r"warning_threshold must be a number in \[0, 1\], got -0.1"),
    ({"psi_bins": 1}, r"psi_bins must be an int >= 2, got 1"),
])
def test_invalid_configuration_names_field_and_value(store: MemoryStore, tel: Telemetry, options: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(store, tel, **options)


@pytest.mark.parametrize("name", ["", " ", "a{b}", "x\n"])
def test_invalid_names(store: MemoryStore, tel: Telemetry, name: str) -> None:
    with pytest.raises(ValueError, match=r"version must be a non-empty string without braces"):
        make(store, tel, version=name)


def test_defaults(store: MemoryStore, tel: Telemetry) -> None:
    d = DriftDetector("gnn", "v2.1.0", store=store, telemetry=tel)
    assert (d.window_size, d.reference_size, d.threshold, d.clear_threshold, d.min_samples, d.check_every) == (
        1000, 1000, 0.3, 0.25, 500, 100)
    assert d.key == "gnn:v2.1.0"
    assert d.last_report is None


# --------------------------------------------------------------- hot path
@settings(max_examples=200, deadline=None)
@given(drift_outputs, drift_outputs)
def test_invalid_samples_are_counted_and_skipped(score: object, conf: object) -> None:
    tel = Telemetry()
    d = make(MemoryStore(telemetry=tel), tel)
    valid = [isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in (score, conf)]
    d.add_production_sample(score, conf)  # type: ignore[arg-type]  # deliberately wrong types too
    assert d.local_samples == (1 if all(valid) else 0)
    assert invalid_count(tel, "drift.anomaly_score") == (0 if valid[0] else 1)
    assert invalid_count(tel, "drift.confidence") == (0 if valid[1] else 1)


def test_invalid_samples_reach_the_report(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    for s, c in [(float("nan"), 0.9), (0.2, float("inf")), (-0.1, 0.9), (0.2, 1.5), (0.2, 0.9)]:
        d.add_production_sample(s, c)
    d.add_production_samples([0.1, float("nan"), 0.3], [0.9, 0.9, -1.0])
    report = d.get_drift_report()
    assert (report.total_samples, report.invalid_samples) == (2, 6)
    assert invalid_count(tel, "drift.anomaly_score") == 3
    assert invalid_count(tel, "drift.confidence") == 3


class BrokenStore(MemoryStore):
    """A store whose hot-path writes fail (a bug in a custom store, say)."""

    def append(self, key: str, items: Any, *, max_len: int) -> None:
        raise RuntimeError("disk on fire")

    def incr(self, key: str, deltas: Any) -> None:
        raise RuntimeError("disk on fire")


def test_hot_path_never_raises_on_store_faults(tel: Telemetry) -> None:
    d = make(BrokenStore(telemetry=tel), tel, check_every=10, window_size=50)
    for _ in range(200):
        d.add_production_sample(0.5, 0.9)
    d.add_production_samples(np.full(100, 0.5), np.full(100, 0.9))
    assert d.local_samples == 50
    faults = sum(sample_value(tel, "mlops_telemetry_errors_total", reason=r) or 0.0
                 for r in ("drift.add_production_sample", "drift.add_production_samples"))
    assert faults >= 20


def test_batch_equals_samples_one_by_one(tel: Telemetry) -> None:
    rng = np.random.default_rng(5)
    scores, confs = rng.uniform(size=3000), rng.beta(45, 5, size=3000)
    one, batch = make(MemoryStore(telemetry=tel), tel), make(MemoryStore(telemetry=tel), tel, version="v2")
    for d in (one, batch):
        d.set_reference(anomaly_scores=GRID, confidences=CONF)
    for s, c in zip(scores, confs, strict=True):
        one.add_production_sample(float(s), float(c))
    for start in range(0, 3000, 700):
        batch.add_production_samples(scores[start:start + 700], confs[start:start + 700])
    a, b = one.get_drift_report(), batch.get_drift_report()
    assert a.outputs == b.outputs
    assert (a.production_samples, a.total_samples) == (b.production_samples, b.total_samples) == (1000, 3000)
    assert a.outputs["anomaly_score"].ks_statistic == ks_2samp(GRID, scores[-1000:]).statistic


def test_concurrent_writers_lose_nothing(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel, check_every=100)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)

    def write(seed: int) -> None:
        for s in np.random.default_rng(seed).uniform(0, 0.5, size=5000):
            d.add_production_sample(float(s), 0.9)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = d.get_drift_report()
    assert report.total_samples == 20_000
    assert report.production_samples == 1000
    assert report.level is not DriftLevel.INSUFFICIENT_DATA


def test_memory_is_flat_over_a_million_samples(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel, check_every=100)
    rng = np.random.default_rng(1)
    scores, confs = rng.uniform(size=10_000), rng.beta(45, 5, size=10_000)
    per_sample = list(zip(scores.tolist(), confs.tolist(), strict=True))

    def stream(n_single: int, n_batches: int) -> None:
        for i in range(n_single):
            s, c = per_sample[i % 10_000]
            d.add_production_sample(s, c)
        for _ in range(n_batches):
            d.add_production_samples(scores, confs)

    # 1,000,000 samples, 200,000 of them through the per-sample hot path (with its periodic pushes and
    # checks), the rest in batches of 10,000. The first 100,000 fill every bounded structure (the
    # windows, the store's list of recent deliveries); the memory held after them must not grow over
    # the remaining 900,000.
    tracemalloc.start()
    try:
        stream(100_000, 0)
        gc.collect()
        warm = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for _ in range(5):
            stream(20_000, 16)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert d.get_drift_report().total_samples == 1_000_000
    # numpy's and scipy's small-object caches keep filling for a while (measured: a plateau at ~27 KiB
    # after ~2 million samples); a leak of one byte per sample, or of 30 per evaluation, would exceed this.
    assert after - warm < 64 * 1024, f"grew by {after - warm} bytes"
    assert peak - warm < 1024 * 1024, f"peak {peak - warm} bytes above the warm state"


# -------------------------------------------------------------- reference
def test_default_reference_is_the_first_production_samples(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel, reference_size=500, check_every=100)
    first = np.linspace(0.1, 0.6, 500)
    d.add_production_samples(first, np.full(500, 0.9))
    report = d.get_drift_report()
    assert (report.reference_source, report.reference_samples) == ("production", 500)
    assert report.current_drift_score == 0.0  # the window is the reference itself
    d.add_production_samples(first + 0.3, np.full(500, 0.9))
    d.add_production_samples(first + 0.3, np.full(500, 0.9))
    assert d.get_drift_report().current_drift_score == pytest.approx(0.6, abs=0.01)


def test_insufficient_data_until_reference_and_min_samples(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel, min_samples=500)
    report = d.get_drift_report()
    assert report.level is DriftLevel.INSUFFICIENT_DATA
    assert report["current_drift_score"] == 0.0
    assert "no reference yet" in report["recommendation"]
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    d.add_production_samples(np.full(400, 0.9), np.full(400, 0.9))  # far from the reference
    report = d.get_drift_report()
    assert report.level is DriftLevel.INSUFFICIENT_DATA
    assert report.current_drift_score == 1.0
    assert not report.alert_triggered
    assert "400 of the 500 production samples" in report.recommendation
    assert gauge(tel, "model_drift_score") is None  # no score is exported before it means something
    d.add_production_samples(np.full(100, 0.9), np.full(100, 0.9))
    assert d.get_drift_report().alert_triggered
    assert gauge(tel, "model_drift_score") == 1.0


def test_set_reference_validation(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel)
    with pytest.raises(ValueError, match=r"anomaly_scores must hold numbers in \[0, 1\] only, got nan at index 1"):
        d.set_reference(anomaly_scores=[0.1, float("nan")], confidences=CONF)
    with pytest.raises(ValueError, match=r"confidences must be a one-dimensional sequence of at least 2 numbers"):
        d.set_reference(anomaly_scores=GRID, confidences=[0.9])
    with pytest.raises(ValueError, match=r"confidences must be a sequence of numbers in \[0, 1\]"):
        d.set_reference(anomaly_scores=GRID, confidences=["high", "low"])  # type: ignore[list-item]


def test_set_reference_is_shared_and_replaces_the_old_one(store: MemoryStore, tel: Telemetry) -> None:
    a, b = make(store, tel), make(store, tel)  # two workers of the same model version
    a.set_reference(anomaly_scores=GRID, confidences=CONF)
    b.add_production_samples(GRID, CONF)
    assert b.get_drift_report().current_drift_score == 0.0
    b.set_reference(anomaly_scores=shifted(0.1), confidences=CONF)
    report = a.get_drift_report()
    assert report.reference_source == "explicit"
    assert report.current_drift_score == pytest.approx(0.2, abs=0.01)
    assert len([k for k in store.list_keys("drift:") if ":reference:" in k]) == 1  # the old data was removed


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_span_of_local_and_shared_windows(store: MemoryStore, tel: Telemetry) -> None:
    clock = Clock()
    d = make(store, tel, window_size=50, clock=clock)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    for i in range(120):
        clock.now = 1000.0 + i  # one sample a second: every sample is delivered on its own
        d.add_production_sample(0.2, 0.9)
    local, shared = d.check(), d.get_drift_report()
    assert (local.window_start, local.window_end, local.time_span_seconds) == (1070.0, 1119.0, 49.0)
    assert (shared.window_start, shared.window_end) == (1070.0, 1119.0)


def test_time_span_start_is_unknown_when_deliveries_do_not_reach_back(store: MemoryStore, tel: Telemetry) -> None:
    clock = Clock()
    d = make(store, tel, window_size=500, clock=clock)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    for i in range(300):  # 300 single-sample deliveries; the store remembers the newest 128
        clock.now = 1000.0 + i
        d.add_production_sample(0.2, 0.9)
    report = d.get_drift_report()
    assert (report.window_start, report.window_end, report.time_span_seconds) == (None, 1299.0, None)
    assert d.check().window_start == 1000.0


# ------------------------------------------------------- reports, alerting
def test_report_keys_and_mapping_access(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    d.add_production_samples(GRID, CONF)
    report = d.get_drift_report()
    assert isinstance(report, DriftReport)
    for key in ("current_drift_score", "alert_triggered", "recommendation"):
        assert report[key] == getattr(report, key)
    assert set(report["ks_statistic"]) == set(report["p_value"]) == set(report["psi"]) == {
        "anomaly_score", "confidence"}
    assert report["confidence_degradation"]["level"] == 0.95
    assert {"window_size", "production_samples", "reference_samples", "time_span_seconds", "level"} <= set(report)
    assert report.scope == "shared"
    json.dumps(report.to_dict(), allow_nan=False)
    assert dict(report) == report.to_dict()


def test_alert_has_hysteresis(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    expected = [(0.175, True), (0.135, True), (0.1, False), (0.135, False), (0.16, True)]
    for shift, alert in expected:
        d.add_production_samples(shifted(shift), CONF)
        report = d.get_drift_report()
        assert report.alert_triggered is alert, (shift, report.current_drift_score)
        assert gauge(tel, "model_drift_alert") == (1.0 if alert else 0.0)
        assert gauge(tel, "model_drift_score") == report.current_drift_score
    assert report.level is DriftLevel.ALERT
    assert "Check the input pipeline" in report.recommendation
    assert "anomaly_score (KS 0.32)" in report.recommendation


def test_warning_for_a_significant_shift_below_the_threshold(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    d.add_production_samples(shifted(0.075), CONF)  # KS 0.15: tiny p-value, below the alert
    report = d.get_drift_report()
    assert (report.level, report.alert_triggered) == (DriftLevel.WARNING, False)
    assert report.outputs["anomaly_score"].significant
    assert report.recommendation.startswith("Watch: anomaly_score (KS 0.15")
    d.add_production_samples(shifted(0.02), CONF)  # KS 0.04: below the warning effect size
    assert d.get_drift_report().level is DriftLevel.OK


def test_periodic_local_checks_update_the_gauges(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel, check_every=100)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    for s in shifted(0.2):
        d.add_production_sample(float(s), 0.9)
    assert d.last_report is not None
    assert d.last_report.scope == "local"
    assert d.alert_active
    assert gauge(tel, "model_drift_alert") == 1.0
    assert gauge(tel, "model_drift_score") == d.last_report.current_drift_score
    # The local transition was shared: a report on the same data agrees.
    assert d.get_drift_report().alert_triggered


def test_check_evaluates_the_local_window(store: MemoryStore, tel: Telemetry) -> None:
    d = make(store, tel)
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    d.add_production_samples(shifted(0.175), CONF)
    local, shared = d.check(), d.get_drift_report()
    assert local.scope == "local"
    assert local.outputs == shared.outputs


# -------------------------------------------------- performance drift, registry
def confidence_drop(d: DriftDetector) -> DriftReport:
    rng = np.random.default_rng(2)
    d.set_reference(anomaly_scores=GRID, confidences=rng.beta(45, 5, size=1000))
    d.add_production_samples(GRID, rng.beta(40, 10, size=1000))
    return d.get_drift_report()


@pytest.fixture
def registry(store: MemoryStore, tel: Telemetry) -> ModelRegistry:
    reg = ModelRegistry(store, telemetry=tel)
    reg.register("gnn", "v2.0.0")
    reg.register("gnn", "v2.1.0")
    reg.promote("gnn", "v2.1.0", reason="won the A/B test")
    reg.register("gnn", "v2.2.0")
    return reg


def test_confidence_drop_names_the_previous_champion(store: MemoryStore, tel: Telemetry,
                                                     registry: ModelRegistry) -> None:
    report = confidence_drop(make(store, tel, registry=registry))
    assert report.performance_drift
    degradation = report.confidence_degradation
    assert degradation is not None
    assert 0.09 < degradation.low < degradation.estimate < degradation.high < 0.11
    assert "mean confidence fell from 0.90 to 0.80" in report.recommendation
    assert "roll back to the previous champion v2.0.0" in report.recommendation


def test_confidence_drop_of_a_challenger_names_the_champion(store: MemoryStore, tel: Telemetry,
                                                            registry: ModelRegistry) -> None:
    report = confidence_drop(make(store, tel, version="v2.2.0", registry=registry))
    assert "roll back to the previous champion v2.1.0" in report.recommendation


def test_registry_may_be_a_callable_or_fail(store: MemoryStore, tel: Telemetry) -> None:
    report = confidence_drop(make(store, tel, registry=lambda model_type, version: "v1.9.9"))
    assert "roll back to the previous champion v1.9.9" in report.recommendation

    class Down:
        def get_champion(self, model_type: str) -> None:
            raise ConnectionError("registry unreachable")

    report = confidence_drop(make(MemoryStore(telemetry=tel), tel, registry=Down()))
    assert "roll back to the previous champion (the registry names none" in report.recommendation
    assert sample_value(tel, "mlops_telemetry_errors_total", reason="drift.registry") == 1.0


# -------------------------------------------------------------- the monitor
def test_monitor_owns_detectors(store: MemoryStore, tel: Telemetry) -> None:
    monitor = DriftMonitor(store, telemetry=tel, window_size=500, check_every=None)
    d = monitor.get_detector("gnn", "v2.1.0")
    assert monitor.get_detector("gnn", "v2.1.0") is d
    assert d.window_size == 500
    big = monitor.get_detector("gnn", "v2.2.0", window_size=2000)
    assert big.window_size == 2000
    assert big.min_samples == 1000
    with pytest.raises(ValueError, match=r"window_size of the existing detector 'gnn:v2.1.0' is 500, got 100"):
        monitor.get_detector("gnn", "v2.1.0", window_size=100)
    view = monitor.detectors()
    assert list(view) == ["gnn:v2.1.0", "gnn:v2.2.0"]
    with pytest.raises(TypeError):
        view["x"] = d  # type: ignore[index]
    d.set_reference(anomaly_scores=GRID, confidences=CONF)
    d.add_production_samples(GRID[:500], CONF[:500])
    reports = monitor.refresh()
    assert set(reports) == {"gnn:v2.1.0", "gnn:v2.2.0"}
    assert reports["gnn:v2.2.0"].level is DriftLevel.INSUFFICIENT_DATA
    monitor.close()
    monitor.close()


def test_monitor_rejects_bad_defaults(store: MemoryStore, tel: Telemetry) -> None:
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\], got 2.0"):
        DriftMonitor(store, telemetry=tel, threshold=2.0)


def test_seed_module_level_api() -> None:
    import mlops_otel

    mlops_otel.reset_default()
    try:
        detector = mlops_otel.get_drift_detector("gnn", "v2.1.0", window_size=200)
        detector.add_production_sample(0.4, 0.9)
        assert mlops_otel.drift_detectors()["gnn:v2.1.0"] is detector
        for key, d in mlops_otel.drift_detectors().items():
            report = d.get_drift_report()
            assert key == "gnn:v2.1.0"
            assert f"{report['current_drift_score']:.3f}" == "0.000"
    finally:
        mlops_otel.reset_default()


# -------------------------------------------------------- shared through Redis
@pytest.fixture
def redis_pair(redis_service: RedisServer, tel: Telemetry) -> Iterator[tuple[StateStore, StateStore]]:
    from mlops_otel.stores.redis import RedisStore

    prefix = f"drift-{uuid.uuid4().hex[:8]}"
    stores = [RedisStore.from_url(redis_service.url, prefix=prefix, flush_interval=0.01, telemetry=tel)
              for _ in range(2)]
    yield stores[0], stores[1]
    for s in stores:
        s.close()


@pytest.mark.integration
def test_workers_on_separate_redis_stores_report_the_same(redis_pair: tuple[StateStore, StateStore],
                                                          tel: Telemetry) -> None:
    a = make(redis_pair[0], tel, reference_size=600, check_every=100)
    b = make(redis_pair[1], tel, reference_size=600, check_every=100)
    rng = np.random.default_rng(9)
    # Each worker sees half the traffic; the first 600 samples overall become the shared reference.
    for d in (a, b):
        d.add_production_samples(rng.normal(0.3, 0.05, 300).clip(0, 1), rng.beta(45, 5, 300))
    for d in (a, b):
        for s, c in zip(rng.normal(0.36, 0.05, 700).clip(0, 1), rng.beta(45, 5, 700), strict=True):
            d.add_production_sample(float(s), float(c))
    a.flush()
    b.flush()
    ra, rb = a.get_drift_report(), b.get_drift_report()
    same = {k: v for k, v in ra.to_dict().items() if k != "evaluated_at"}
    assert same == {k: v for k, v in rb.to_dict().items() if k != "evaluated_at"}
    assert (ra.reference_source, ra.reference_samples, ra.production_samples) == ("production", 600, 1000)
    assert ra.total_samples == 2000
    # The local checks saw only their own half; the shared report covers both workers.
    assert a.local_samples == b.local_samples == 1000


@pytest.mark.integration
def test_explicit_reference_reaches_the_other_worker_through_redis(redis_pair: tuple[StateStore, StateStore],
                                                                   tel: Telemetry) -> None:
    a, b = make(redis_pair[0], tel), make(redis_pair[1], tel)
    a.set_reference(anomaly_scores=GRID, confidences=CONF)
    b.add_production_samples(shifted(0.175), CONF)
    b.flush()
    rb = b.get_drift_report()
    assert rb.reference_source == "explicit"
    assert rb.alert_triggered
    assert a.get_drift_report().alert_triggered  # the alert state is shared too

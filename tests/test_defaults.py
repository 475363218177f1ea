"""The seed's module-level style: lazily created defaults, and its three utility scripts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import mlops_otel


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


def test_nothing_is_created_at_import() -> None:
    """Importing every public module creates no default, starts no thread and reads no configuration."""
    import subprocess
    import sys

    code = """
import os, threading
read = []
class Env(dict):
    def get(self, key, default=None):
        read.append(key)
        return super().get(key, default)
    def __getitem__(self, key):
        read.append(key)
        return super().__getitem__(key)
os.environ = Env(os.environ)
import mlops_otel, mlops_otel.metrics, mlops_otel.telemetry, mlops_otel.stores, mlops_otel.registry
import mlops_otel.ab, mlops_otel.drift, mlops_otel.fastapi, mlops_otel.testing, mlops_otel.deploy, mlops_otel.cli
from mlops_otel import _runtime
assert _runtime._SLOT.value is None, "a default runtime was created at import"
assert threading.active_count() == 1, threading.enumerate()
# OpenTelemetry's own modules read a few OTEL_* settings when imported (context, propagators,
# excluded URLs); what this SDK would read when configured must not be read yet.
mine = [k for k in read if k.startswith(("MLOPS_OTEL_", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
                                          "OTEL_EXPORTER_", "OTEL_METRICS_EXPORTER"))]
assert not mine, mine
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_seed_scripts_run_on_the_defaults() -> None:
    from mlops_otel import ABTestConfig, ab_test_manager, drift_detectors, get_drift_detector, model_registry

    # Proxies to the current default: equal to (and instances of the class of) its parts.
    assert model_registry == mlops_otel.default_runtime().registry
    assert ab_test_manager == mlops_otel.default_runtime().ab
    assert isinstance(model_registry, mlops_otel.ModelRegistry)
    model_registry.register("gnn", "v2.1.0")
    model_registry.register("gnn", "v2.2.0")

    # scripts/start_ab_test.py
    config = ABTestConfig(name="gnn_v2.2_test", model_type="gnn", control_version="v2.1.0",
                          treatment_version="v2.2.0", treatment_traffic_pct=10, duration_days=7)
    ab_test_manager.start_test(config)
    assert "gnn_v2.2_test" in ab_test_manager._active_tests  # the seed's main.py peeks at it

    rng = np.random.default_rng(3)
    for i in range(20_000):
        variant = ab_test_manager.assign_variant("gnn", f"user-{i}")
        treated = variant["name"] == "treatment"
        ab_test_manager.record_result(variant["test"], variant["name"], inference_time_ms=float(rng.normal(40, 4)),
                                      confidence=float(np.clip(rng.normal(0.9 if treated else 0.85, 0.05), 0, 1)),
                                      error=False)
        detector = get_drift_detector("gnn", variant["version"], window_size=500)
        detector.add_production_sample(float(rng.beta(2, 5)), float(rng.beta(9, 1)))

    # scripts/evaluate_ab_test.py
    result = ab_test_manager.evaluate_test("gnn_v2.2_test")
    assert result["decision"] == "promote", result["recommendation"]
    assert result["n_control"] + result["n_treatment"] == 20_000
    assert ab_test_manager.finalize_test("gnn_v2.2_test", "promote")
    assert model_registry.get_champion("gnn").version == "v2.2.0"

    # scripts/check_drift.py
    lines = []
    for key, detector in drift_detectors().items():
        report = detector.get_drift_report()
        status = "green" if report["current_drift_score"] < 0.3 else "red"
        lines.append(f"{status} {key}: {report['current_drift_score']:.3f}")
        assert not report["alert_triggered"]
    assert sorted(line.split()[1] for line in lines) == ["gnn:v2.1.0:", "gnn:v2.2.0:"]
    assert get_drift_detector("gnn", "v2.1.0").window_size == 500
    with pytest.raises(ValueError, match=r"window_size of the existing detector 'gnn:v2.1.0' is 500, got 2000"):
        get_drift_detector("gnn", "v2.1.0", window_size=2000)


def test_configure_replaces_and_closes_the_default() -> None:
    from mlops_otel import ab_test_manager, model_registry
    from mlops_otel.telemetry import default_telemetry

    first = mlops_otel.default_runtime()
    assert default_telemetry() is first.telemetry  # one default slot: the telemetry is the runtime's
    model_registry.register("gnn", "v1")
    assert first.registry.model_types() == ["gnn"]
    second = mlops_otel.configure(max_label_values=5)
    assert first.closed
    assert mlops_otel.default_runtime() is second
    assert default_telemetry() is second.telemetry
    # Names imported before configure() follow the new default instead of holding closed objects.
    assert model_registry == second.registry
    assert model_registry.model_types() == []  # a new store: the default is not shared with the old one
    model_registry.register("gnn", "v2")
    assert second.registry.model_types() == ["gnn"]
    assert ab_test_manager.store is second.store
    assert "default runtime's registry" in repr(model_registry)


def test_set_default_telemetry_names_its_replacement() -> None:
    from mlops_otel.telemetry import Telemetry, set_default_telemetry

    with pytest.raises(TypeError, match=r"mlops_otel\.configure"):
        set_default_telemetry(Telemetry())


def test_runtime_is_closed_at_exit_in_order() -> None:
    """A runtime the application never closed is closed once at exit: owners, then store, then telemetry."""
    import subprocess
    import sys

    code = """
import atexit
order = []
atexit.register(lambda: print("order=" + ",".join(order)))  # registered first: runs last
import mlops_otel
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry

class Store(MemoryStore):
    def close(self):
        # The registry's buffered result must already be in the store.
        order.append("store(n=%d)" % rt.registry.get("gnn", "v1").stats.n)
        super().close()

class Tel(Telemetry):
    def close(self):
        order.append("telemetry")
        super().close()

rt = mlops_otel.Runtime(Tel(), Store())
rt.registry.register("gnn", "v1")
rt.registry.update_metrics("gnn", "v1", 12.0, 0.9)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "order=store(n=1),telemetry", out.stdout + out.stderr[-2000:]

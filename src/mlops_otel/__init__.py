"""mlops-otel: OpenTelemetry-native model registry, A/B testing, drift detection and telemetry.

Explicit objects first::

    runtime = mlops_otel.Runtime.create(mlops_otel.Settings(store="redis://localhost:6379/0"))
    runtime.registry.register("gnn", "v2.1.0")
    with runtime.prediction("gnn", user_id="u-1") as p:
        p.observe(anomaly_score=0.2, confidence=0.9)

and, for the seed's module-level style, the default runtime (created on first use,
replaced by :func:`configure`) behind per-use proxies::

    from mlops_otel import model_registry, ab_test_manager, get_drift_detector
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._fleet import FleetMetrics
from ._prediction import Prediction, current_prediction
from ._runtime import (
    DefaultProxy,
    Runtime,
    configure,
    default_runtime,
    install_default,
    open_store,
    reset_default,
)
from ._version import __version__
from .metrics import (
    metrics_app,
    record_error,
    record_gnn_metrics,
    record_rag_metrics,
    set_drift_score,
    track_diagnosis_request,
    track_stage,
)
from .settings import DriftSettings, Settings, StoreSettings
from .stores import MemoryStore, StateStore
from .telemetry import Telemetry

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .ab import ABTestConfig, ABTestManager
    from .drift import DriftDetector, DriftMonitor
    from .registry import ModelRegistry

__all__ = [
    "ABTestConfig",
    "ABTestManager",
    "DriftDetector",
    "DriftMonitor",
    "DriftSettings",
    "FleetMetrics",
    "MemoryStore",
    "ModelRegistry",
    "Prediction",
    "Runtime",
    "Settings",
    "StateStore",
    "StoreSettings",
    "Telemetry",
    "ab_test_manager",
    "__version__",
    "configure",
    "current_prediction",
    "default_runtime",
    "drift_detectors",
    "get_drift_detector",
    "install_default",
    "metrics_app",
    "model_registry",
    "open_store",
    "record_error",
    "record_gnn_metrics",
    "record_rag_metrics",
    "reset_default",
    "set_drift_score",
    "track_diagnosis_request",
    "track_stage",
]


#: The default runtime's model registry, resolved on every use (survives :func:`configure`).
model_registry: ModelRegistry = DefaultProxy("registry")  # type: ignore[assignment]  # a proxy, typed as its target
#: The default runtime's A/B test manager, resolved on every use (survives :func:`configure`).
ab_test_manager: ABTestManager = DefaultProxy("ab")  # type: ignore[assignment]  # a proxy, typed as its target


def get_drift_detector(model_type: str, version: str, *, window_size: int | None = None) -> DriftDetector:
    """Return (creating on first use) the default monitor's detector for a model version.

    The default runtime is looked up on every call; the detector returned belongs
    to the runtime that is the default at that moment.
    """
    monitor = default_runtime().drift
    if window_size is None:
        return monitor.get_detector(model_type, version)
    return monitor.get_detector(model_type, version, window_size=window_size)


def drift_detectors() -> Mapping[str, DriftDetector]:
    """Every detector of the default monitor, keyed ``"<model_type>:<version>"``."""
    return default_runtime().drift.detectors()


_LAZY_CLASSES = {
    "ABTestConfig": ("ab", "ABTestConfig"),
    "ABTestManager": ("ab", "ABTestManager"),
    "DriftDetector": ("drift", "DriftDetector"),
    "DriftMonitor": ("drift", "DriftMonitor"),
    "ModelRegistry": ("registry", "ModelRegistry"),
}


def __getattr__(name: str) -> Any:
    # PEP 562: the heavier classes are imported on first access.
    if name in _LAZY_CLASSES:
        import importlib

        module, attr = _LAZY_CLASSES[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

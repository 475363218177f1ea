"""The values a drift evaluation produces: the level, one output's drift, the report."""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from ._features import EmbeddingDrift, FeatureDrift
from ._stats import ConfidenceInterval

__all__ = ["DriftLevel", "DriftReport", "OutputDrift"]


class DriftLevel(enum.StrEnum):
    """How worried a report is: not enough data, nothing to see, watch, act."""

    INSUFFICIENT_DATA = "insufficient_data"
    OK = "ok"
    WARNING = "warning"
    ALERT = "alert"


@attrs.frozen
class OutputDrift:
    """Drift of one monitored output: KS distance and p-value, PSI and both means.

    *p_value* is the KS p-value at the *effective* sample sizes (serial
    dependence discounted, see :mod:`mlops_otel.drift._calibration`), exact
    when they are small (*p_value_method*). *significant*: that p-value is
    below the Bonferroni-corrected ``alpha`` and the KS distance reaches
    ``warning_threshold``.
    """

    name: str
    ks_statistic: float
    p_value: float
    psi: float
    reference_mean: float
    production_mean: float
    significant: bool
    effective_production_samples: float = 0.0
    effective_reference_samples: float = 0.0
    p_value_method: str = "asymptotic"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return attrs.asdict(self)


@attrs.frozen
class DriftReport(Mapping[str, Any]):
    """One drift evaluation of a model version; also a read-only mapping.

    ``report["current_drift_score"]``, ``report["alert_triggered"]`` and
    ``report["recommendation"]`` work as in the seed, and so does every other
    key of :meth:`to_dict`. ``scope`` is ``"shared"`` for
    :meth:`DriftDetector.get_drift_report` (the store's windows, identical on
    every worker) and ``"local"`` for the periodic in-process checks.
    """

    model_type: str
    version: str
    current_drift_score: float
    alert_triggered: bool
    level: DriftLevel
    recommendation: str
    outputs: Mapping[str, OutputDrift]
    confidence_degradation: ConfidenceInterval | None
    performance_drift: bool
    threshold: float
    clear_threshold: float
    window_size: int
    min_samples: int
    production_samples: int
    reference_samples: int
    reference_source: str | None
    total_samples: int
    invalid_samples: int
    window_start: float | None
    window_end: float | None
    evaluated_at: float
    scope: str
    #: Input features, ranked: flagged ones first, then by score.
    features: Mapping[str, FeatureDrift] = attrs.field(factory=dict)
    embedding: EmbeddingDrift | None = None
    #: How the decisions were calibrated (see docs/drift.md).
    calibration: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def time_span_seconds(self) -> float | None:
        """Seconds between the oldest and the newest sample of the production window (``None``: unknown)."""
        if self.window_start is None or self.window_end is None:
            return None
        return self.window_end - self.window_start

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-friendly values (the mapping view reads this)."""
        degradation = self.confidence_degradation
        return {
            "model_type": self.model_type,
            "version": self.version,
            "current_drift_score": self.current_drift_score,
            "alert_triggered": self.alert_triggered,
            "level": self.level.value,
            "recommendation": self.recommendation,
            "threshold": self.threshold,
            "clear_threshold": self.clear_threshold,
            "ks_statistic": {name: out.ks_statistic for name, out in self.outputs.items()},
            "p_value": {name: out.p_value for name, out in self.outputs.items()},
            "psi": {name: out.psi for name, out in self.outputs.items()},
            "outputs": {name: out.to_dict() for name, out in self.outputs.items()},
            "confidence_degradation": None if degradation is None else attrs.asdict(degradation),
            "performance_drift": self.performance_drift,
            "window_size": self.window_size,
            "min_samples": self.min_samples,
            "production_samples": self.production_samples,
            "reference_samples": self.reference_samples,
            "reference_source": self.reference_source,
            "total_samples": self.total_samples,
            "invalid_samples": self.invalid_samples,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "time_span_seconds": self.time_span_seconds,
            "evaluated_at": self.evaluated_at,
            "scope": self.scope,
            "features": {name: f.to_dict() for name, f in self.features.items()},
            "embedding": None if self.embedding is None else self.embedding.to_dict(),
            "calibration": dict(self.calibration),
        }

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())



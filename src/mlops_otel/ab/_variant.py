"""Mergeable sufficient statistics of one A/B variant (pure): built-in and custom metrics.

A variant's evidence is a fixed vector of sums per test: the result count,
the error count, the moments of latency (raw for display, and of its
logarithm for the decision), of confidence, and of every custom metric the
test declares. Any two partial vectors merge by addition, so workers sum their
own results in process and publish snapshots (see :mod:`._manager`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs

from ..stats import Moments, SufficientStats
from ._config import ABTestConfig

__all__ = ["LOG_LATENCY_FLOOR_MS", "VariantStats", "field_names"]

# The registry's shifts (confidence centred on 0.5, latency unshifted), so the moments merge exactly.
CONFIDENCE_SHIFT = 0.5
LATENCY_SHIFT_MS = 0.0
#: Latencies below this (1 microsecond) count as this much on the log scale (log 0 is undefined).
LOG_LATENCY_FLOOR_MS = 1e-3

_BASE = ("n", "errors", "latency_n", "latency_sum", "latency_sumsq", "log_latency_n", "log_latency_sum",
         "log_latency_sumsq", "confidence_n", "confidence_sum", "confidence_sumsq")


def field_names(config: ABTestConfig) -> tuple[str, ...]:
    """The counter fields of a variant of *config*, in order: built-ins, then three per custom metric."""
    return _BASE + tuple(f"m.{m.name}.{part}" for m in config.metrics for part in ("n", "sum", "sumsq"))


def _count(fields: Mapping[str, float], name: str) -> int:
    value = fields.get(name, 0.0)
    return round(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0


def _moments(fields: Mapping[str, float], prefix: str, shift: float) -> Moments:
    return Moments(_count(fields, prefix + "n"), float(fields.get(prefix + "sum", 0.0)),
                   float(fields.get(prefix + "sumsq", 0.0)), shift)


@attrs.frozen
class VariantStats:
    """Results of one variant: count, errors, latency (raw and log), confidence and custom metrics.

    Custom binary metrics are moments of 0/1 values (``total`` counts the ones).
    """

    n: int = 0
    errors: int = 0
    latency_ms: Moments = attrs.field(factory=lambda: Moments(shift=LATENCY_SHIFT_MS))
    log_latency: Moments = attrs.field(factory=Moments)
    confidence: Moments = attrs.field(factory=lambda: Moments(shift=CONFIDENCE_SHIFT))
    metrics: Mapping[str, Moments] = attrs.field(factory=dict)

    @classmethod
    def from_counters(cls, fields: Mapping[str, float]) -> VariantStats:
        """Rebuild from counter fields (missing fields are zero)."""
        custom = {k[2:-2]: _moments(fields, k[:-1], 0.0) for k in fields if k.startswith("m.") and k.endswith(".n")}
        return cls(_count(fields, "n"), _count(fields, "errors"), _moments(fields, "latency_", LATENCY_SHIFT_MS),
                   _moments(fields, "log_latency_", 0.0), _moments(fields, "confidence_", CONFIDENCE_SHIFT), custom)

    @classmethod
    def from_values(cls, names: Sequence[str], values: Sequence[float]) -> VariantStats:
        """Rebuild from a vector of sums laid out as :func:`field_names`."""
        return cls.from_counters(dict(zip(names, values, strict=True)))

    @classmethod
    def from_sufficient(cls, stats: SufficientStats) -> VariantStats:
        """Wrap registry statistics (no log-latency moments: the decision falls back to the delta method)."""
        return cls(stats.n, stats.errors, stats.latency_ms, Moments(), stats.confidence, {})

    def merge(self, other: VariantStats) -> VariantStats:
        """Both sets of results together (associative, commutative)."""
        names = set(self.metrics) | set(other.metrics)
        empty = Moments()
        return VariantStats(self.n + other.n, self.errors + other.errors, self.latency_ms.merge(other.latency_ms),
                            self.log_latency.merge(other.log_latency), self.confidence.merge(other.confidence),
                            {k: self.metrics.get(k, empty).merge(other.metrics.get(k, empty)) for k in sorted(names)})

    def to_counters(self) -> dict[str, float]:
        """The counter fields (see :meth:`from_counters`)."""
        out = {"n": float(self.n), "errors": float(self.errors)}
        for prefix, m in (("latency_", self.latency_ms), ("log_latency_", self.log_latency),
                          ("confidence_", self.confidence)):
            out.update({prefix + "n": float(m.n), prefix + "sum": m.total, prefix + "sumsq": m.total_sq})
        for name, m in self.metrics.items():
            out.update({f"m.{name}.n": float(m.n), f"m.{name}.sum": m.total, f"m.{name}.sumsq": m.total_sq})
        return out

    def to_sufficient(self) -> SufficientStats:
        """The registry's view of these results (drops log latency and custom metrics)."""
        return SufficientStats(self.n, self.errors, self.latency_ms, self.confidence)

    @property
    def error_rate(self) -> float:
        """Errors over results (NaN when there are none)."""
        return self.errors / self.n if self.n else math.nan

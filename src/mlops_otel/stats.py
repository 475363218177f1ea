"""Mergeable sufficient statistics of inference results (pure: no store, no telemetry).

A model version's running metrics and an A/B variant's evidence are the same
thing: the count, the error count, and the first two moments of latency and
confidence. They are kept as *sums* so that every worker can add its own
results with one atomic ``incr`` and any two partial results merge by
addition (associative and commutative, the property a write-behind store
needs).

Numerical stability. Sums of squares lose precision when the spread is tiny
next to the mean (variance = E[x^2] - E[x]^2 cancels). Each measurement is
therefore summed as ``x - shift`` with a fixed per-field shift constant:

* confidence is shifted by ``0.5``, the centre of its range ``[0, 1]``, so
  ``|mean - shift| <= 0.5`` whatever the model;
* latency is not shifted (``0.0``): it has no natural centre, and latencies
  have a coefficient of variation far above the danger zone.

The worst-case relative error of the variance from ``n`` sequential float
additions is about ``n * 2**-53 * (1 + ((mean - shift) / sd) ** 2)``; the
typical error grows with ``sqrt(n)``. For latency ``1000 +- 1 ms`` over
``10**5`` results that is below ``1e-6`` in practice (tested), far below the
sampling error any decision tolerates. Statistics with different shifts still
merge exactly: :meth:`Moments.merge` re-bases the other operand algebraically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import attrs
import numpy as np

from .validation import InvalidValueError

__all__ = ["CONFIDENCE_SHIFT", "LATENCY_SHIFT_MS", "VECTOR_MIN", "Moments", "SufficientStats"]

#: Shift subtracted from every confidence before summing (centre of ``[0, 1]``).
CONFIDENCE_SHIFT = 0.5
#: From this many values a batch is summed with numpy (pairwise summation; on a batch of 10,000 the registry
#: and A/B sums took 0.07 µs per value against 0.29 with ``math.fsum``, see docs/performance.md). The sums
#: may then differ from ``math.fsum``'s in their last bits.
VECTOR_MIN = 64
#: Shift subtracted from every latency in milliseconds before summing.
LATENCY_SHIFT_MS = 0.0


@attrs.frozen
class Moments:
    """Count, shifted sum and shifted sum of squares of one measurement.

    ``total = sum(x - shift)`` and ``total_sq = sum((x - shift) ** 2)``.
    """

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    shift: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float], *, shift: float = 0.0) -> Moments:
        """Summarise *values* (``math.fsum``: exactly rounded sums)."""
        centred = [float(x) - shift for x in values]
        return cls(len(centred), math.fsum(centred), math.fsum(d * d for d in centred), shift)

    def add(self, x: float) -> Moments:
        """Return these moments with one more value *x*."""
        d = x - self.shift
        return Moments(self.n + 1, self.total + d, self.total_sq + d * d, self.shift)

    def merge(self, other: Moments) -> Moments:
        """Return the moments of both samples together (in *self*'s shift)."""
        total, total_sq = other.total, other.total_sq
        if other.shift != self.shift:
            # sum(x - s1) = sum(x - s2) + n * (s2 - s1), and the square expands likewise.
            d = other.shift - self.shift
            total_sq = total_sq + 2.0 * d * total + other.n * d * d
            total = total + other.n * d
        return Moments(self.n + other.n, self.total + total, self.total_sq + total_sq, self.shift)

    @property
    def mean(self) -> float:
        """The sample mean (NaN when empty)."""
        if self.n == 0:
            return math.nan
        return self.shift + self.total / self.n

    @property
    def variance(self) -> float:
        """The unbiased sample variance (NaN below two values; never negative)."""
        if self.n < 2:
            return math.nan
        centred_ss = self.total_sq - self.total * self.total / self.n
        return max(centred_ss, 0.0) / (self.n - 1)

    @property
    def std(self) -> float:
        """The sample standard deviation (NaN below two values)."""
        return math.sqrt(self.variance)


_EMPTY_LATENCY = Moments(shift=LATENCY_SHIFT_MS)
_EMPTY_CONFIDENCE = Moments(shift=CONFIDENCE_SHIFT)

def _count(fields: Mapping[str, float], name: str) -> int:
    value = fields.get(name, 0.0)
    return round(value) if math.isfinite(value) else 0


@attrs.frozen
class SufficientStats:
    """Results of one model version or A/B variant, as mergeable sums.

    ``n`` results of which ``errors`` failed; latency (ms) and confidence
    moments count only the results that reported that measurement.
    """

    n: int = 0
    errors: int = 0
    latency_ms: Moments = _EMPTY_LATENCY
    confidence: Moments = _EMPTY_CONFIDENCE

    #: The counter fields of :meth:`delta_values`, in order.
    FIELDS: ClassVar[tuple[str, ...]] = (
        "n", "errors", "latency_n", "latency_sum", "latency_sumsq", "confidence_n", "confidence_sum",
        "confidence_sumsq",
    )

    @staticmethod
    def delta_values(
        inference_time_ms: float | None, confidence: float | None, error: bool
    ) -> tuple[float, float, float, float, float, float, float, float]:
        """The increments of :attr:`FIELDS` for one result (values already validated); hot path."""
        if inference_time_ms is None:
            ln = ls = lq = 0.0
        else:
            ls = inference_time_ms - LATENCY_SHIFT_MS
            ln, lq = 1.0, ls * ls
        if confidence is None:
            cn = cs = cq = 0.0
        else:
            cs = confidence - CONFIDENCE_SHIFT
            cn, cq = 1.0, cs * cs
        return (1.0, 1.0 if error else 0.0, ln, ls, lq, cn, cs, cq)

    @staticmethod
    def delta_sums(inference_times_ms: Sequence[float], confidences: Sequence[float],
                   ) -> tuple[float, float, float, float, float, float, float, float]:
        """The :meth:`delta_values` of successful results with both values, summed (values already validated).

        >>> SufficientStats.delta_sums([2.0, 4.0], [0.5, 1.0])
        (2.0, 0.0, 2.0, 6.0, 20.0, 2.0, 0.5, 0.25)
        """
        n = float(len(inference_times_ms))
        if n >= VECTOR_MIN:
            la = np.asarray(inference_times_ms, dtype=np.float64) - LATENCY_SHIFT_MS
            ca = np.asarray(confidences, dtype=np.float64) - CONFIDENCE_SHIFT
            return (n, 0.0, n, float(la.sum()), float((la * la).sum()), n, float(ca.sum()), float((ca * ca).sum()))
        ls = [x - LATENCY_SHIFT_MS for x in inference_times_ms]
        cs = [x - CONFIDENCE_SHIFT for x in confidences]
        return (n, 0.0, n, math.fsum(ls), math.fsum(x * x for x in ls), n, math.fsum(cs), math.fsum(x * x for x in cs))

    @staticmethod
    def deltas(inference_time_ms: float | None, confidence: float | None, error: bool) -> dict[str, float]:
        """The counter increments for one result (values already validated)."""
        out = {"n": 1.0, "errors": 1.0 if error else 0.0}
        if inference_time_ms is not None:
            d = inference_time_ms - LATENCY_SHIFT_MS
            out["latency_n"] = 1.0
            out["latency_sum"] = d
            out["latency_sumsq"] = d * d
        if confidence is not None:
            d = confidence - CONFIDENCE_SHIFT
            out["confidence_n"] = 1.0
            out["confidence_sum"] = d
            out["confidence_sumsq"] = d * d
        return out

    def observe(self, inference_time_ms: float | None, confidence: float | None, error: bool) -> SufficientStats:
        """Return these statistics with one more result."""
        return self.merge(SufficientStats.from_counters(self.deltas(inference_time_ms, confidence, error)))

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Return the statistics of both sets of results (associative, commutative)."""
        return SufficientStats(
            self.n + other.n,
            self.errors + other.errors,
            self.latency_ms.merge(other.latency_ms),
            self.confidence.merge(other.confidence),
        )

    @property
    def error_rate(self) -> float:
        """Errors over results (NaN when there are none)."""
        return self.errors / self.n if self.n else math.nan

    def to_counters(self) -> dict[str, float]:
        """These statistics as the counter fields a store keeps (see :meth:`from_counters`)."""
        # Merging into the empty moments re-bases onto the standard shifts.
        lat = _EMPTY_LATENCY.merge(self.latency_ms)
        conf = _EMPTY_CONFIDENCE.merge(self.confidence)
        return {
            "n": float(self.n), "errors": float(self.errors),
            "latency_n": float(lat.n), "latency_sum": lat.total, "latency_sumsq": lat.total_sq,
            "confidence_n": float(conf.n), "confidence_sum": conf.total, "confidence_sumsq": conf.total_sq,
        }

    @classmethod
    def from_counters(cls, fields: Mapping[str, float]) -> SufficientStats:
        """Rebuild statistics from counter fields (missing fields are zero, unknown ones ignored)."""
        return cls(
            _count(fields, "n"),
            _count(fields, "errors"),
            Moments(_count(fields, "latency_n"), float(fields.get("latency_sum", 0.0)),
                    float(fields.get("latency_sumsq", 0.0)), LATENCY_SHIFT_MS),
            Moments(_count(fields, "confidence_n"), float(fields.get("confidence_sum", 0.0)),
                    float(fields.get("confidence_sumsq", 0.0)), CONFIDENCE_SHIFT),
        )

    @classmethod
    def of(
        cls,
        latencies_ms: Iterable[float] = (),
        confidences: Iterable[float] = (),
        *,
        n: int | None = None,
        errors: int = 0,
    ) -> SufficientStats:
        """Summarise raw measurements (``n`` defaults to the number of latencies)."""
        lat = Moments.of(latencies_ms, shift=LATENCY_SHIFT_MS)
        conf = Moments.of(confidences, shift=CONFIDENCE_SHIFT)
        count = max(lat.n, conf.n) if n is None else n
        if errors < 0 or errors > count:
            raise InvalidValueError("errors", f"between 0 and n={count}", errors)
        return cls(count, errors, lat, conf)

"""The shadow report: what the challenger did next to the champion, and whether to A/B test it (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
from scipy import stats as _scipy_stats

from ..drift import ks_2samp
from ._config import ShadowConfig

__all__ = ["ComparisonResult", "OutputShift", "ShadowReport", "clopper_pearson", "summarize"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a proportion *k* / *n* at *level*.

    ``(0.0, 1.0)`` when ``n == 0``.
    """
    if n <= 0:
        return 0.0, 1.0
    a = (1.0 - level) / 2.0
    lo = 0.0 if k <= 0 else float(_scipy_stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k >= n else float(_scipy_stats.beta.ppf(1.0 - a, k + 1, n - k))
    return lo, hi


@attrs.frozen
class ComparisonResult:
    """How often champion and challenger disagreed under one declared comparison."""

    name: str
    description: str
    pairs: int
    disagreements: int
    rate: float
    lower: float
    upper: float
    mean_difference: float
    limit: float


@attrs.frozen
class OutputShift:
    """Two-sample KS distance between the challenger's and the champion's recent values of one output."""

    output: str
    statistic: float
    p_value: float
    n: int


@attrs.frozen
class ShadowReport:
    """A shadow run summarised, with a recommendation.

    ``ready`` says the challenger may go on to an A/B test; otherwise
    ``reasons`` says why not (each a sentence). Latencies are in milliseconds;
    the champion's are ``NaN`` unless the caller passed them to ``submit``.
    """

    model_type: str
    challenger_version: str
    submitted: int
    sampled_out: int
    dropped: int
    completed: int
    errors: int
    error_types: tuple[tuple[str, int], ...]
    error_rate: float
    error_upper: float
    challenger_p50_ms: float
    challenger_p99_ms: float
    champion_p50_ms: float
    champion_p99_ms: float
    comparisons: tuple[ComparisonResult, ...]
    shifts: tuple[OutputShift, ...]
    ready: bool
    reasons: tuple[str, ...]
    recommendation: str

    @property
    def processed(self) -> int:
        """Pairs the challenger ran on (completed or failed)."""
        return self.completed + self.errors

    def comparison(self, name: str) -> ComparisonResult:
        """The result of the comparison *name* (e.g. ``"anomaly_score_flip"``)."""
        for c in self.comparisons:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-compatible values (NaN becomes ``None``)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value

        out = attrs.asdict(self, recurse=True)
        out["error_types"] = dict(self.error_types)
        return dict(clean(out))


def _quantiles(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    q = np.quantile(np.asarray(values, dtype=np.float64), [0.5, 0.99])
    return float(q[0]), float(q[1])


def _pct(x: float) -> str:
    return f"{x:.2%}"


def summarize(
    config: ShadowConfig,
    *,
    submitted: int,
    sampled_out: int,
    dropped: int,
    completed: int,
    errors: Mapping[str, int],
    disagreements: Mapping[str, int],
    difference_sums: Mapping[str, float],
    challenger_latencies_ms: Sequence[float],
    champion_latencies_ms: Sequence[float],
    champion_outputs: Mapping[str, Sequence[float]],
    challenger_outputs: Mapping[str, Sequence[float]],
) -> ShadowReport:
    """Build the report of a shadow run from its counts and recent windows (pure)."""
    level = float(config.confidence_level)
    n_errors = sum(errors.values())
    processed = completed + n_errors
    error_rate = n_errors / processed if processed else math.nan
    error_upper = clopper_pearson(n_errors, processed, level)[1]
    reasons: list[str] = []
    if completed < config.min_pairs:
        reasons.append(f"only {completed} pairs completed, need {config.min_pairs}")
    if processed and error_upper > config.max_error_rate:
        reasons.append(f"challenger error rate {_pct(error_rate)} (upper bound {_pct(error_upper)}) "
                       f"is not shown to be at most {_pct(config.max_error_rate)}")
    results = []
    for c in config.comparisons:
        k = int(disagreements.get(c.name, 0))
        rate = k / completed if completed else math.nan
        lo, hi = clopper_pearson(k, completed, level)
        mean_diff = float(difference_sums.get(c.name, 0.0)) / completed if completed else math.nan
        results.append(ComparisonResult(c.name, c.describe(), completed, k, rate, lo, hi, mean_diff,
                                        float(config.max_disagreement)))
        if completed and hi > config.max_disagreement:
            reasons.append(f"{c.name}: disagreement {_pct(rate)} [{_pct(lo)}, {_pct(hi)}] "
                           f"is not shown to be at most {_pct(config.max_disagreement)} ({c.describe()})")
    shifts = []
    for output in config.outputs:
        champ, chall = champion_outputs.get(output, ()), challenger_outputs.get(output, ())
        if len(champ) >= 2 and len(chall) >= 2:
            ks = ks_2samp(np.asarray(champ, dtype=np.float64), np.asarray(chall, dtype=np.float64))
            shifts.append(OutputShift(output, float(ks.statistic), float(ks.pvalue), min(len(champ), len(chall))))
            if ks.statistic > config.max_output_drift:
                reasons.append(f"{output}: the challenger's outputs differ from the champion's by KS distance "
                               f"{ks.statistic:.3f} > {config.max_output_drift:g}")
    c50, c99 = _quantiles(challenger_latencies_ms)
    h50, h99 = _quantiles(champion_latencies_ms)
    if math.isfinite(c99) and math.isfinite(h99) and h99 > 0 and c99 > config.max_latency_ratio * h99:
        reasons.append(f"challenger p99 latency {c99:.1f} ms is {c99 / h99:.2f}x the champion's {h99:.1f} ms "
                       f"(at most {config.max_latency_ratio:g}x)")
    ready = not reasons
    who = f"{config.model_type} {config.challenger_version}"
    incomplete = f"; {dropped} requests were dropped (queue full), so the sample is not every request" \
        if dropped else ""
    if ready:
        recommendation = (f"Ready for an A/B test: {who} agreed with the champion on {completed} shadowed "
                          f"requests within the declared limits{incomplete}.")
    else:
        recommendation = f"Not ready for an A/B test: {who}: " + "; ".join(reasons) + f"{incomplete}."
    return ShadowReport(
        config.model_type, config.challenger_version, submitted, sampled_out, dropped, completed, n_errors,
        tuple(sorted(errors.items())), error_rate, error_upper, c50, c99, h50, h99, tuple(results),
        tuple(shifts), ready, tuple(reasons), recommendation,
    )

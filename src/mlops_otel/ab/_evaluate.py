"""The A/B decision: a pure function of the two variants' sufficient statistics.

Three metrics are compared with anytime-valid confidence sequences (see
:mod:`._stats`), each at level ``alpha / 3`` so that the probability of *any*
wrong promote or rollback over the whole test stays below ``alpha`` (union
bound), however many times the test is evaluated:

* ``error_rate``: difference of proportions (treatment - control), lower is better;
* ``latency_ms``: ratio of means (treatment / control - 1, on the log scale), lower is better;
* ``confidence``: difference of means (Welch), higher is better.

Decision, first match wins:

1. ``halt``: the observed split is incompatible with the configured traffic
   (chi-square p < ``srm_alpha``): assignment or logging is broken, nothing
   else can be trusted.
2. ``continue``: a variant has fewer than ``min_samples`` results.
3. ``rollback``: some metric is significantly worse than its guardrail
   tolerance allows.
4. ``promote``: some metric is significantly better and none is worse.
5. ``rollback`` when the test has ended (``ended=True``) without a winner:
   the control stays champion. Otherwise ``continue``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import numpy.typing as npt

from ..stats import SufficientStats
from . import _stats
from ._config import BUCKETS, ABTestConfig

__all__ = ["Decision", "Evaluation", "MetricEffect", "StatsBatch", "evaluate", "evaluate_batch"]

Array = npt.NDArray[np.float64]

METRICS = ("error_rate", "latency_ms", "confidence")
_CODES = ("continue", "promote", "rollback", "halt")
_CONTINUE, _PROMOTE, _ROLLBACK, _HALT = range(4)
#: Minimum expected results per arm before the chi-square approximation is trusted.
_SRM_MIN_EXPECTED = 5.0


class Decision(enum.StrEnum):
    """What to do with the test now."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    CONTINUE = "continue"
    HALT = "halt"


Verdict = Literal["better", "worse", "inconclusive", "no data"]


@attrs.frozen
class MetricEffect:
    """The treatment's effect on one metric, with its anytime-valid confidence sequence.

    ``estimate``, ``lower``, ``upper`` and ``tolerance`` are differences
    (treatment - control) for ``error_rate`` and ``confidence`` and relative
    changes (treatment / control - 1) for ``latency_ms``. ``p_value`` is the
    always-valid p-value of "no difference".
    """

    metric: str
    control: float
    treatment: float
    estimate: float
    lower: float
    upper: float
    p_value: float
    tolerance: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """The effect as JSON-compatible values (NaN becomes ``None``)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in attrs.asdict(self).items()}


@attrs.frozen
class Evaluation(Mapping[str, Any]):
    """The outcome of one evaluation; also readable like the seed's dict (``result["decision"]``)."""

    test: str
    decision: Decision
    recommendation: str
    reasons: tuple[str, ...]
    n_control: int
    n_treatment: int
    effects: tuple[MetricEffect, ...]
    srm_p_value: float
    alpha: float
    ended: bool

    def effect(self, metric: str) -> MetricEffect:
        """The effect on *metric* (``error_rate``, ``latency_ms`` or ``confidence``)."""
        for e in self.effects:
            if e.metric == metric:
                return e
        raise KeyError(metric)

    def to_dict(self) -> dict[str, Any]:
        """The evaluation as JSON-compatible values."""
        return {
            "test": self.test, "decision": self.decision.value, "recommendation": self.recommendation,
            "reasons": list(self.reasons), "n_control": self.n_control, "n_treatment": self.n_treatment,
            "effects": {e.metric: e.to_dict() for e in self.effects},
            "srm_p_value": None if math.isnan(self.srm_p_value) else self.srm_p_value,
            "alpha": self.alpha, "ended": self.ended,
        }

    # Mapping protocol: the seed's scripts index results like a dict.
    def __getitem__(self, key: str) -> Any:
        if key == "effects":
            return {e.metric: e for e in self.effects}
        if key in _KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_KEYS)

    def __len__(self) -> int:
        return len(_KEYS)


_KEYS = tuple(a.name for a in attrs.fields(Evaluation))


def _arr(values: Sequence[float]) -> Array:
    return np.asarray(values, dtype=np.float64)


@attrs.frozen
class StatsBatch:
    """Many variants' statistics as parallel arrays (count, errors, mean and variance per metric)."""

    n: Array
    errors: Array
    latency_n: Array
    latency_mean: Array
    latency_var: Array
    confidence_n: Array
    confidence_mean: Array
    confidence_var: Array

    @classmethod
    def from_stats(cls, stats: Sequence[SufficientStats]) -> StatsBatch:
        """Stack :class:`SufficientStats` values."""
        return cls(
            _arr([s.n for s in stats]), _arr([s.errors for s in stats]),
            _arr([s.latency_ms.n for s in stats]), _arr([s.latency_ms.mean for s in stats]),
            _arr([s.latency_ms.variance for s in stats]),
            _arr([s.confidence.n for s in stats]), _arr([s.confidence.mean for s in stats]),
            _arr([s.confidence.variance for s in stats]),
        )


@attrs.frozen
class _MetricArrays:
    control: Array
    treatment: Array
    estimate: Array
    lower: Array
    upper: Array
    p_value: Array
    tolerance: float
    available: npt.NDArray[np.bool_]
    better: npt.NDArray[np.bool_]
    worse: npt.NDArray[np.bool_]


@attrs.frozen
class _Analysis:
    codes: npt.NDArray[np.int64]
    srm_p: Array
    srm: npt.NDArray[np.bool_]
    enough: npt.NDArray[np.bool_]
    metrics: dict[str, _MetricArrays]


def _metric(
    control: Array, treatment: Array, est: Array, se: Array, n_eff: Array, planned: float, alpha: float,
    tolerance: float, *, lower_is_better: bool, log_scale: bool, available: npt.NDArray[np.bool_],
) -> _MetricArrays:
    ok = available & np.isfinite(est) & np.isfinite(se)
    lo, hi, p = _stats.confidence_sequence(np.where(ok, est, 0.0), np.where(ok, se, 1.0), n_eff, planned, alpha)
    tol = math.log1p(tolerance) if log_scale else tolerance
    if lower_is_better:
        better, worse = ok & (hi < 0.0), ok & (lo > tol)
    else:
        better, worse = ok & (lo > 0.0), ok & (hi < -tol)
    nan = np.full_like(lo, np.nan)
    with np.errstate(over="ignore"):
        est_out, lo_out, hi_out = (np.where(ok, np.expm1(x) if log_scale else x, nan) for x in (est, lo, hi))
    return _MetricArrays(control, treatment, est_out, lo_out, hi_out, np.where(ok, p, nan), tolerance,
                         ok, better, worse)


def _analyze(control: StatsBatch, treatment: StatsBatch, config: ABTestConfig, ended: bool) -> _Analysis:
    alpha = float(config.alpha) / len(METRICS)
    q = (BUCKETS - config.treatment_buckets) / BUCKETS
    p = config.treatment_buckets / BUCKETS
    planned = float(config.planned_samples) * (p * q)  # effective n of the planned split (symmetric)
    g = config.guardrails
    c, t = control, treatment

    with np.errstate(invalid="ignore", divide="ignore"):
        err_c, err_t = c.errors / c.n, t.errors / t.n
    est, se = _stats.proportion_difference(c.errors, c.n, t.errors, t.n)
    error_rate = _metric(err_c, err_t, est, se, _stats.effective_n(c.n, t.n), planned, alpha,
                         float(g.max_error_rate_increase), lower_is_better=True, log_scale=False,
                         available=(c.n >= 2) & (t.n >= 2))
    est, se = _stats.log_ratio_of_means(c.latency_mean, c.latency_var, c.latency_n,
                                        t.latency_mean, t.latency_var, t.latency_n)
    latency = _metric(c.latency_mean, t.latency_mean, est, se, _stats.effective_n(c.latency_n, t.latency_n),
                      planned, alpha, float(g.max_latency_increase_pct) / 100.0, lower_is_better=True,
                      log_scale=True, available=(c.latency_n >= 2) & (t.latency_n >= 2))
    est, se = _stats.welch_difference(c.confidence_mean, c.confidence_var, c.confidence_n,
                                      t.confidence_mean, t.confidence_var, t.confidence_n)
    confidence = _metric(c.confidence_mean, t.confidence_mean, est, se,
                         _stats.effective_n(c.confidence_n, t.confidence_n), planned, alpha,
                         float(g.max_confidence_decrease), lower_is_better=False, log_scale=False,
                         available=(c.confidence_n >= 2) & (t.confidence_n >= 2))
    metrics = {"error_rate": error_rate, "latency_ms": latency, "confidence": confidence}

    srm_p = _stats.srm_p_value(c.n, t.n, p, q)
    total = c.n + t.n
    srm = (total * min(p, q) >= _SRM_MIN_EXPECTED) & (srm_p < float(config.srm_alpha))
    enough = (c.n >= config.min_samples) & (t.n >= config.min_samples)
    worse = enough & (error_rate.worse | latency.worse | confidence.worse)
    better = enough & (error_rate.better | latency.better | confidence.better)
    codes = np.full(np.broadcast(c.n, t.n).shape, _CONTINUE, dtype=np.int64)
    codes[better] = _PROMOTE
    codes[worse] = _ROLLBACK
    if ended:
        codes[codes == _CONTINUE] = _ROLLBACK
    codes[srm] = _HALT
    return _Analysis(codes, srm_p, srm, enough, metrics)


def evaluate_batch(
    control: StatsBatch, treatment: StatsBatch, config: ABTestConfig, *, ended: bool = False
) -> npt.NDArray[np.str_]:
    """Decide many tests at once (same rules as :func:`evaluate`); returns decision strings.

    For simulations and backtests: one numpy pass over thousands of
    (control, treatment) pairs.
    """
    codes = _analyze(control, treatment, config, ended).codes
    return np.asarray(_CODES)[codes]


def _fmt(x: float, pct: bool) -> str:
    return f"{x * 100:+.2f}%" if pct else f"{x:+.4g}"


def _describe(e: MetricEffect) -> str:
    pct = e.metric != "confidence"
    unit = " (relative)" if e.metric == "latency_ms" else ""
    return (f"{e.metric} {_fmt(e.estimate, pct)}{unit}, anytime-valid CI "
            f"[{_fmt(e.lower, pct)}, {_fmt(e.upper, pct)}]")


def _words(e: MetricEffect) -> str:
    pct = e.metric != "confidence"
    if e.verdict == "worse":
        return f"{_describe(e)} is worse than the tolerated {_fmt(e.tolerance, pct)}"
    return f"{_describe(e)} is better"


def evaluate(
    control: SufficientStats,
    treatment: SufficientStats,
    config: ABTestConfig,
    *,
    ended: bool = False,
) -> Evaluation:
    """Decide the test *config* from the variants' statistics (pure; safe to call again and again).

    *ended* says the test reached its planned duration: an undecided test
    then resolves to ``rollback`` (keep the control).
    """
    a = _analyze(StatsBatch.from_stats([control]), StatsBatch.from_stats([treatment]), config, ended)
    effects = []
    for name, m in a.metrics.items():
        verdict: Verdict = ("no data" if not m.available[0] else "worse" if m.worse[0]
                            else "better" if m.better[0] else "inconclusive")
        effects.append(MetricEffect(
            name, float(m.control[0]), float(m.treatment[0]), float(m.estimate[0]), float(m.lower[0]),
            float(m.upper[0]), float(m.p_value[0]), m.tolerance, verdict,
        ))
    decision = Decision(_CODES[int(a.codes[0])])
    srm_p = float(a.srm_p[0])
    n_c, n_t = control.n, treatment.n
    worse = [e for e in effects if e.verdict == "worse"]
    better = [e for e in effects if e.verdict == "better"]
    treat, ctrl = config.treatment_version, config.control_version
    reasons: list[str]
    if decision is Decision.HALT:
        share = n_t / (n_c + n_t)
        reasons = [f"sample ratio mismatch: treatment got {share:.2%} of {n_c + n_t} results, "
                   f"expected {config.treatment_fraction:.2%} (chi-square p={srm_p:.2g} < {config.srm_alpha:g})"]
        recommendation = (f"Halt test {config.name!r} and investigate assignment and result logging: "
                          "the variants' traffic does not match the configured split, so no effect "
                          "estimate can be trusted.")
    elif not bool(a.enough[0]):
        reasons = [f"too few results: control {n_c}, treatment {n_t}, need {config.min_samples} each"]
        if ended:
            recommendation = (f"Roll back {treat}: test {config.name!r} ended before collecting "
                              f"{config.min_samples} results per variant; {ctrl} stays champion.")
        else:
            recommendation = f"Keep test {config.name!r} running: {reasons[0]}."
    elif worse:
        reasons = [_words(e) for e in worse]
        recommendation = f"Roll back {treat}: " + "; ".join(reasons) + f". {ctrl} stays champion."
    elif better:
        reasons = [_words(e) for e in better]
        recommendation = f"Promote {treat} to champion: " + "; ".join(reasons) + ", and no guardrail was breached."
    else:
        reasons = ["no significant difference yet: " + "; ".join(_describe(e) for e in effects
                                                                 if e.verdict == "inconclusive")]
        if ended:
            recommendation = (f"Roll back {treat}: test {config.name!r} reached its planned duration "
                              f"without a significant improvement; {ctrl} stays champion.")
        else:
            recommendation = (f"Keep test {config.name!r} running: no metric differs significantly yet "
                              "(the intervals stay valid however often you look).")
    return Evaluation(config.name, decision, recommendation, tuple(reasons), n_c, n_t, tuple(effects),
                      srm_p, float(config.alpha), ended)

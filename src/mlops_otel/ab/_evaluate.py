"""The A/B decision: a pure function of the two variants' sufficient statistics.

The ship rule (risk-aware decisions with one primary metric and guardrails,
after Schultzberg, Ankargren & Frånberg, "Risk-aware product decisions in A/B
tests with multiple metrics", Spotify 2024, made sequential with the
always-valid confidence sequences of :mod:`._stats`, Howard et al. 2021):

* the **primary** metric (default ``confidence``; any built-in or custom
  metric) is tested for superiority at the full ``alpha`` with a two-sided
  confidence sequence, which also catches it getting significantly worse;
* every other metric is a **guardrail** with a non-inferiority margin
  (:class:`~._config.Guardrails` for the built-ins, ``MetricSpec.margin`` for
  custom ones). Promotion is an intersection-union test: it needs *every*
  guardrail's interval inside its margin, so the guardrails need no alpha
  split for the promote decision (Berger 1982; Schultzberg et al. 2024).

Metrics and estimators (effect = treatment - control, on the analysis scale):

* ``error_rate`` and binary custom metrics: difference of proportions with a
  score-type standard error (:func:`._stats.pooled_proportion_difference`);
  a proportion may decide only once each arm expects ``min_events`` events
  and non-events at the pooled rate;
* ``latency_ms``: difference of mean *log* latencies, i.e. the log of the
  ratio of geometric means (robust to rare huge latencies, which dominate a
  raw mean); shown as a relative change, margin relative;
* ``confidence`` and continuous custom metrics: difference of means (Welch).

Decision, first match wins:

1. ``halt``: the sequential sample-ratio test (multinomial mixture SPRT,
   Lindon & Malek 2022) rejects the configured split at ``srm_alpha``.
2. ``continue``: a variant has fewer than ``min_samples`` results.
3. ``rollback``: the primary is significantly worse, or some guardrail's
   interval lies entirely beyond its margin (harm shown).
4. ``promote``: the primary is significantly better AND every guardrail is
   shown within its margin (guardrails nobody reported are not applicable).
5. ``rollback`` when the test has ended (``ended=True``) without a
   promotion: the control stays champion. Otherwise ``continue``.

Error guarantees, over the whole test however often it is evaluated: a
promotion when the primary is not better has probability at most ``alpha``;
a promotion while some guardrail is worse than its margin has probability at
most ``alpha``; an equal treatment is rolled back by the primary with
probability at most ``alpha`` (both sides share the two-sided ``alpha``), and
by a guardrail only if its harm exceeds a positive margin by chance, which
is far rarer. Segments (``segment_by``) are reported with a Bonferroni
correction over the segments and never move roles.
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
from ._variant import VariantStats

__all__ = [
    "Decision", "Evaluation", "MetricBatch", "MetricEffect", "SegmentReport", "StatsBatch", "evaluate",
    "evaluate_batch",
]

Array = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

METRICS = ("error_rate", "latency_ms", "confidence")
_CODES = ("continue", "promote", "rollback", "halt")
_CONTINUE, _PROMOTE, _ROLLBACK, _HALT = range(4)


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

    ``estimate``, ``lower``, ``upper`` and ``tolerance`` (the margin) are
    differences (treatment - control), relative changes (treatment / control
    - 1 of the geometric means) for ``latency_ms``. ``p_value`` is the
    always-valid p-value of "no difference". ``verdict`` is ``better`` or
    ``worse`` when the interval excludes no difference (``worse`` for a
    guardrail: beyond its margin), ``non_inferior`` whether the interval lies
    within the margin (what a promotion needs of a guardrail).
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
    role: str = "guardrail"
    non_inferior: bool = False
    higher_is_better: bool = True
    n_control: int = 0
    n_treatment: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The effect as JSON-compatible values (NaN becomes ``None``)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in attrs.asdict(self).items()}


@attrs.frozen
class SegmentReport:
    """One segment's effects (Bonferroni-corrected over segments; reported only)."""

    segment: str
    n_control: int
    n_treatment: int
    effects: tuple[MetricEffect, ...]
    #: What the rule would say for this segment alone (never applied).
    indication: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values."""
        return {"segment": self.segment, "n_control": self.n_control, "n_treatment": self.n_treatment,
                "indication": self.indication, "effects": {e.metric: e.to_dict() for e in self.effects}}


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
    primary: str = "confidence"
    #: Results delivered after the watermark, left out of this decision (see ABTestManager).
    excluded_control: int = 0
    excluded_treatment: int = 0
    #: Time up to which every live worker had delivered (None: all data used).
    watermark: float | None = None
    segments: tuple[SegmentReport, ...] = ()
    #: What this evaluation did to the test: "promoted", "rolled_back", "aborted" or None.
    applied: str | None = None
    evaluated_at: float | None = None

    @property
    def roles_moved(self) -> bool:
        """Whether this evaluation changed the registry roles (promoted, rolled back or aborted the test)."""
        return self.applied is not None

    def effect(self, metric: str) -> MetricEffect:
        """The effect on *metric*."""
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
            "alpha": self.alpha, "ended": self.ended, "primary": self.primary,
            "excluded_control": self.excluded_control, "excluded_treatment": self.excluded_treatment,
            "watermark": self.watermark, "segments": [s.to_dict() for s in self.segments],
            "applied": self.applied, "roles_moved": self.roles_moved, "evaluated_at": self.evaluated_at,
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
class MetricBatch:
    """One metric over many variants: observations, mean and variance on the analysis scale.

    For binary metrics ``mean`` is the proportion (``var`` is not used); for
    ``latency_ms`` the moments are of the log latency. ``display`` is the
    value reports show (the raw mean; defaults to ``mean``).
    """

    n: Array
    mean: Array
    var: Array
    display: Array | None = None


def _batch(n: Sequence[float], mean: Sequence[float], var: Sequence[float],
           display: Sequence[float] | None = None) -> MetricBatch:
    return MetricBatch(_arr(n), _arr(mean), _arr(var), None if display is None else _arr(display))


@attrs.frozen
class StatsBatch:
    """Many variants' statistics as parallel arrays: result counts and one :class:`MetricBatch` per metric."""

    n: Array
    metrics: Mapping[str, MetricBatch]

    @classmethod
    def from_stats(cls, stats: Sequence[VariantStats | SufficientStats]) -> StatsBatch:
        """Stack statistics (registry :class:`SufficientStats` have no log latency: delta method)."""
        vs = [VariantStats.from_sufficient(s) if isinstance(s, SufficientStats) else s for s in stats]
        n = _arr([s.n for s in vs])
        with np.errstate(invalid="ignore", divide="ignore"):
            errors = MetricBatch(n, _arr([s.errors / s.n if s.n else math.nan for s in vs]), n * 0)
        lat_mean, lat_var, lat_n = [], [], []
        for s in vs:
            if s.log_latency.n:
                lat_n.append(s.log_latency.n)
                lat_mean.append(s.log_latency.mean)
                lat_var.append(s.log_latency.variance)
            else:  # log of the mean, variance by the delta method
                m = s.latency_ms.mean
                lat_n.append(s.latency_ms.n)
                lat_mean.append(math.log(m) if m > 0 else math.nan)
                lat_var.append(s.latency_ms.variance / (m * m) if m > 0 else math.nan)
        metrics = {
            "error_rate": errors,
            "latency_ms": _batch(lat_n, lat_mean, lat_var, [s.latency_ms.mean for s in vs]),
            "confidence": _batch([s.confidence.n for s in vs], [s.confidence.mean for s in vs],
                                 [s.confidence.variance for s in vs]),
        }
        names = sorted({k for s in vs for k in s.metrics})
        for name in names:
            ms = [s.metrics.get(name) for s in vs]
            metrics[name] = _batch([m.n if m else 0 for m in ms], [m.mean if m else math.nan for m in ms],
                                   [m.variance if m else math.nan for m in ms])
        return cls(n, metrics)


@attrs.frozen
class _Spec:
    name: str
    binary: bool
    higher: bool
    log: bool
    primary: bool
    margin: float  # on the analysis scale


def _specs(config: ABTestConfig) -> list[_Spec]:
    g, primary = config.guardrails, config.primary
    out = [
        _Spec("error_rate", True, False, False, primary == "error_rate", float(g.max_error_rate_increase)),
        _Spec("latency_ms", False, False, True, primary == "latency_ms",
              math.log1p(float(g.max_latency_increase_pct) / 100.0)),
        _Spec("confidence", False, True, False, primary == "confidence", float(g.max_confidence_decrease)),
    ]
    out += [_Spec(m.name, m.kind == "binary", m.higher_is_better, False, m.name == primary, float(m.margin))
            for m in config.metrics]
    return out


@attrs.frozen
class _MetricArrays:
    spec: _Spec
    n_c: Array
    n_t: Array
    control: Array
    treatment: Array
    estimate: Array
    lower: Array
    upper: Array
    p_value: Array
    available: Bools
    reported: Bools
    better: Bools
    worse: Bools
    within: Bools


def _metric(spec: _Spec, c: MetricBatch, t: MetricBatch, planned: float, alpha: float,
            min_events: int, shape: tuple[int, ...]) -> _MetricArrays:
    nc, nt = np.broadcast_to(c.n, shape), np.broadcast_to(t.n, shape)
    if spec.binary:
        xc, xt = c.mean * nc, t.mean * nt
        est, se = _stats.pooled_proportion_difference(xc, nc, xt, nt)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = (xc + xt) / (nc + nt)
        # Each arm needs min_events events and non-events, observed or expected at the pooled rate: a small
        # arm that saw few events cannot decide on them, while a flood of events in one arm still can.
        enough = np.ones(shape, dtype=bool)
        for x, n in ((xc, nc), (xt, nt)):
            enough &= np.fmax(x, n * pooled) >= min_events
            enough &= np.fmax(n - x, n * (1.0 - pooled)) >= min_events
    else:
        est, se = _stats.welch_difference(c.mean, c.var, nc, t.mean, t.var, nt)
        enough = np.ones(shape, dtype=bool)
    # The interval exists from two results per arm; a proportion may claim better or worse only
    # once the events are frequent enough for the normal approximation (``min_events``).
    available = (nc >= 2) & (nt >= 2) & np.isfinite(est) & np.isfinite(se)
    lo, hi, p = _stats.confidence_sequence(np.where(available, est, 0.0), np.where(available, se, 1.0),
                                           _stats.effective_n(nc, nt), planned, alpha)
    # Harm: how much worse the treatment is (positive = worse), with its interval.
    harm_lo, harm_hi = (-hi, -lo) if spec.higher else (lo, hi)
    decides = available & enough
    if spec.primary:
        worse, better = decides & (harm_lo > 0.0), decides & (harm_hi < 0.0)
    else:
        worse, better = decides & (harm_lo > spec.margin), decides & (harm_hi < 0.0)
    within = available & (harm_hi < spec.margin)
    nan = np.full(shape, np.nan)
    with np.errstate(over="ignore"):
        out = [np.where(available, np.expm1(x) if spec.log else x, nan) for x in (est, lo, hi)]
    cd = c.display if c.display is not None else c.mean
    td = t.display if t.display is not None else t.mean
    return _MetricArrays(spec, nc, nt, np.broadcast_to(cd, shape), np.broadcast_to(td, shape), out[0], out[1],
                         out[2], np.where(available, p, nan), available, (nc > 0) | (nt > 0), better, worse, within)


@attrs.frozen
class _Analysis:
    codes: npt.NDArray[np.int64]
    srm_p: Array
    srm: Bools
    enough: Bools
    metrics: list[_MetricArrays]


def _planned(config: ABTestConfig) -> float:
    p = config.treatment_buckets / BUCKETS
    return float(config.planned_samples) * p * (1.0 - p)  # effective n of the planned split


def _analyze(control: StatsBatch, treatment: StatsBatch, config: ABTestConfig, ended: bool,
             alpha: float | None = None, with_srm: bool = True) -> _Analysis:
    level = float(config.alpha) if alpha is None else alpha
    shape = np.broadcast(control.n, treatment.n).shape
    planned = _planned(config)
    metrics = []
    for spec in _specs(config):
        c, t = control.metrics.get(spec.name), treatment.metrics.get(spec.name)
        if c is None or t is None:
            empty = MetricBatch(np.zeros(shape), np.full(shape, np.nan), np.full(shape, np.nan))
            c, t = c or empty, t or empty
        metrics.append(_metric(spec, c, t, planned, level, config.min_events, shape))

    p = config.treatment_buckets / BUCKETS
    srm_p = _stats.srm_p_value(control.n, treatment.n, p) if with_srm else np.ones(shape)
    srm = np.broadcast_to(srm_p < float(config.srm_alpha), shape)
    enough = (control.n >= config.min_samples) & (treatment.n >= config.min_samples)
    worse = np.zeros(shape, dtype=bool)
    promote = np.ones(shape, dtype=bool)
    for m in metrics:
        worse |= m.worse
        if m.spec.primary:
            promote &= m.better
        else:
            promote &= m.within | ~m.reported  # a guardrail nobody reports is not applicable
    codes = np.full(shape, _CONTINUE, dtype=np.int64)
    codes[enough & promote] = _PROMOTE
    codes[enough & worse] = _ROLLBACK
    if ended:
        codes[codes == _CONTINUE] = _ROLLBACK
    codes[srm] = _HALT
    return _Analysis(codes, np.broadcast_to(srm_p, shape), srm, np.broadcast_to(enough, shape), metrics)


def evaluate_batch(
    control: StatsBatch, treatment: StatsBatch, config: ABTestConfig, *, ended: bool = False
) -> npt.NDArray[np.str_]:
    """Decide many tests at once (same rules as :func:`evaluate`); returns decision strings.

    For simulations and backtests: one numpy pass over thousands of
    (control, treatment) pairs, e.g. every look of every simulated test.
    """
    codes = _analyze(control, treatment, config, ended).codes
    return np.asarray(_CODES)[codes]


def _fmt(x: float, pct: bool) -> str:
    return f"{x * 100:+.2f}%" if pct else f"{x:+.4g}"


def _pct(metric: str, binary: bool) -> bool:
    return metric == "latency_ms" or binary


def _describe(e: MetricEffect, pct: bool) -> str:
    unit = " (relative)" if e.metric == "latency_ms" else ""
    return (f"{e.metric} {_fmt(e.estimate, pct)}{unit}, anytime-valid CI "
            f"[{_fmt(e.lower, pct)}, {_fmt(e.upper, pct)}]")


def _effects(a: _Analysis, i: int) -> tuple[MetricEffect, ...]:
    effects = []
    for m in a.metrics:
        s = m.spec
        verdict: Verdict = ("no data" if not m.available[i] else "worse" if m.worse[i]
                            else "better" if m.better[i] else "inconclusive")
        margin = 0.0 if s.primary else (math.expm1(s.margin) if s.log else s.margin)
        effects.append(MetricEffect(
            s.name, float(m.control[i]), float(m.treatment[i]), float(m.estimate[i]), float(m.lower[i]),
            float(m.upper[i]), float(m.p_value[i]), margin, verdict, "primary" if s.primary else "guardrail",
            bool(m.within[i]), s.higher, int(m.n_c[i]), int(m.n_t[i]),
        ))
    return tuple(effects)


def _segments(segments: Mapping[str, tuple[VariantStats | SufficientStats, VariantStats | SufficientStats]],
              config: ABTestConfig) -> tuple[SegmentReport, ...]:
    if not segments:
        return ()
    names = sorted(segments)
    c = StatsBatch.from_stats([segments[k][0] for k in names])
    t = StatsBatch.from_stats([segments[k][1] for k in names])
    a = _analyze(c, t, config, False, alpha=float(config.alpha) / len(names), with_srm=False)
    return tuple(SegmentReport(k, int(c.n[i]), int(t.n[i]), _effects(a, i), _CODES[int(a.codes[i])])
                 for i, k in enumerate(names))


def evaluate(
    control: VariantStats | SufficientStats,
    treatment: VariantStats | SufficientStats,
    config: ABTestConfig,
    *,
    ended: bool = False,
    segments: Mapping[str, tuple[VariantStats | SufficientStats, VariantStats | SufficientStats]] | None = None,
) -> Evaluation:
    """Decide the test *config* from the variants' statistics (pure; safe to call again and again).

    *ended* says the test reached its planned duration: an undecided test
    then resolves to ``rollback`` (keep the control). *segments* maps a
    segment value to its (control, treatment) statistics: reported with a
    Bonferroni correction, never part of the decision.
    """
    a = _analyze(StatsBatch.from_stats([control]), StatsBatch.from_stats([treatment]), config, ended)
    effects = _effects(a, 0)
    binary = {m.spec.name: m.spec.binary for m in a.metrics}
    decision = Decision(_CODES[int(a.codes[0])])
    srm_p = float(a.srm_p[0])
    n_c, n_t = control.n, treatment.n
    primary = next(e for e in effects if e.role == "primary")
    treat, ctrl = config.treatment_version, config.control_version

    def words(e: MetricEffect) -> str:
        pct = _pct(e.metric, binary[e.metric])
        if e.verdict == "worse" and e.role == "guardrail":
            return f"{_describe(e, pct)} is worse than the tolerated {_fmt(e.tolerance, pct)}"
        return f"{_describe(e, pct)} is {e.verdict}"

    reasons: list[str]
    if decision is Decision.HALT:
        share = n_t / (n_c + n_t)
        reasons = [f"sample ratio mismatch: treatment got {share:.2%} of {n_c + n_t} results, "
                   f"expected {config.treatment_fraction:.2%} (sequential test p={srm_p:.2g} < "
                   f"{config.srm_alpha:g})"]
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
    elif decision is Decision.ROLLBACK and any(e.verdict == "worse" for e in effects):
        reasons = [words(e) for e in effects if e.verdict == "worse"]
        recommendation = f"Roll back {treat}: " + "; ".join(reasons) + f". {ctrl} stays champion."
    elif decision is Decision.PROMOTE:
        reasons = [words(primary)] + [
            f"{e.metric} within its margin {_fmt(e.tolerance, _pct(e.metric, binary[e.metric]))}"
            for e in effects if e.role == "guardrail" and e.non_inferior]
        recommendation = (f"Promote {treat} to champion: primary metric {words(primary)}, and every "
                          "guardrail is shown within its margin.")
    else:
        pending = [e for e in effects if e.role == "guardrail" and not e.non_inferior and e.n_control + e.n_treatment]
        if primary.verdict == "better":
            reasons = [words(primary)] + [f"{e.metric} not yet shown within its margin "
                                          f"{_fmt(e.tolerance, _pct(e.metric, binary[e.metric]))}"
                                          f" ({_describe(e, _pct(e.metric, binary[e.metric]))})" for e in pending]
        else:
            reasons = [f"primary metric not significantly better yet: "
                       f"{_describe(primary, _pct(primary.metric, binary[primary.metric]))}"]
        if ended:
            recommendation = (f"Roll back {treat}: test {config.name!r} reached its planned duration "
                              f"without a shown improvement within the guardrails; {ctrl} stays champion.")
        else:
            recommendation = (f"Keep test {config.name!r} running: " + "; ".join(reasons)
                              + " (the intervals stay valid however often you look).")
    return Evaluation(config.name, decision, recommendation, tuple(reasons), n_c, n_t, effects,
                      srm_p, float(config.alpha), ended, config.primary,
                      segments=_segments(segments or {}, config))

"""Progressive rollout: the schedule of traffic steps and the decision at each step (pure).

A rollout runs an A/B test whose treatment share grows step by step, for
example 1 -> 5 -> 20 -> 50 %. Each step is judged on the results collected
*during that step only* (counter snapshots taken when the step began are
subtracted), so every step is an A/B comparison at one fixed split and the
sample-ratio check stays valid. At each look, first match wins:

1. ``rollback``: the ship rule finds harm (some metric significantly worse
   than its guardrail tolerance, or a sample-ratio mismatch). Harm at any
   step, however early, rolls back at once.
2. ``hold``: fewer than ``min_results`` treatment results, or less than
   ``min_seconds``, at this step; or the "no harm" evidence is not there yet.
3. ``advance`` (``handover`` at the last step): "no harm" is shown, i.e.
   every metric with data is *non-inferior*: its anytime-valid interval lies
   within its margin. By default that is the ship rule's own evidence
   (``MetricEffect.non_inferior``, the test's guardrail margins); a schedule
   may set its own margins for the built-in metrics instead
   (``error_rate_margin``, ``latency_margin_pct``, ``confidence_margin``).
   After the last step the rollout hands over to the test's normal
   promote/rollback decision.

Assignment stays monotone: the treatment owns the hash buckets
``[0, treatment_buckets)`` of a fixed salt, so raising the share only adds
users to the treatment (see :mod:`._assign`).
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..stats import SufficientStats
from ..validation import InvalidValueError
from ._config import BUCKETS, ABTestConfig
from ._evaluate import Decision, Evaluation, MetricEffect, evaluate
from ._variant import VariantStats

__all__ = [
    "RolloutSchedule",
    "RolloutState",
    "RolloutStatus",
    "RolloutStep",
    "StepDecision",
    "StepVerdict",
    "judge_step",
    "step_config",
    "step_stats",
]


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Any:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    expected = f"a finite number in {lo}{low:g}, {high:g}{hi}"

    def check(_: object, attribute: attrs.Attribute[float], value: object) -> None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            v = float(value)  # type: ignore[arg-type]  # checked just above
            ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise InvalidValueError(attribute.name, expected, value)

    return check


def _int_at_least(minimum: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[int], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise InvalidValueError(attribute.name, f"an integer >= {minimum}", value)

    return check


@attrs.frozen
class RolloutStep:
    """One step: the treatment's traffic share and how long it must show no harm before the next."""

    traffic_pct: float = attrs.field(validator=_number(0.0, 100.0, low_open=True, high_open=True))
    #: Treatment results collected at this step before it may advance.
    min_results: int = attrs.field(default=5000, validator=_int_at_least(2))
    #: Seconds spent at this step before it may advance.
    min_seconds: float = attrs.field(default=0.0, validator=_number(0.0, 10 * 365 * 86400.0))

    def to_dict(self) -> dict[str, float | int]:
        """JSON-compatible values."""
        return {"traffic_pct": float(self.traffic_pct), "min_results": self.min_results,
                "min_seconds": float(self.min_seconds)}


def _steps(value: object) -> object:
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return tuple(RolloutStep(**s) if isinstance(s, Mapping) else s for s in value)
    return value


def _check_steps(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not value or not all(isinstance(s, RolloutStep) for s in value):
        raise InvalidValueError(attribute.name, "one or more RolloutStep values", value)
    pcts = [float(s.traffic_pct) for s in value]
    if any(b <= a for a, b in itertools.pairwise(pcts)):
        raise InvalidValueError(attribute.name, "steps with strictly increasing traffic_pct", tuple(pcts))


@attrs.frozen(kw_only=True)
class RolloutSchedule:
    """The traffic steps of a rollout, and optionally its own "no harm" margins.

    A margin left at ``None`` uses the ship rule's (the test's guardrail margins).
    """

    steps: tuple[RolloutStep, ...] = attrs.field(converter=_steps, validator=_check_steps)
    #: Largest tolerated absolute error-rate increase (0.01 = one percentage point).
    error_rate_margin: float | None = attrs.field(default=None, validator=attrs.validators.optional(
        _number(0.0, 1.0, low_open=True)))
    #: Largest tolerated relative latency increase, in percent.
    latency_margin_pct: float | None = attrs.field(default=None, validator=attrs.validators.optional(
        _number(0.0, 1000.0, low_open=True)))
    #: Largest tolerated absolute confidence decrease.
    confidence_margin: float | None = attrs.field(default=None, validator=attrs.validators.optional(
        _number(0.0, 1.0, low_open=True)))

    @classmethod
    def of(cls, traffic_pcts: Sequence[float] = (1.0, 5.0, 20.0, 50.0), *, min_results: int = 5000,
           min_seconds: float = 0.0, **margins: float) -> RolloutSchedule:
        """Steps at *traffic_pcts*, each needing *min_results* treatment results and *min_seconds*."""
        return cls(steps=[RolloutStep(p, min_results, min_seconds) for p in traffic_pcts], **margins)

    @property
    def last(self) -> int:
        """Index of the last step."""
        return len(self.steps) - 1

    def margin(self, metric: str) -> float | None:
        """This schedule's margin of *metric* in the units of its effect (``None``: the ship rule's)."""
        if metric == "error_rate" and self.error_rate_margin is not None:
            return float(self.error_rate_margin)
        if metric == "latency_ms" and self.latency_margin_pct is not None:
            return float(self.latency_margin_pct) / 100.0
        if metric == "confidence" and self.confidence_margin is not None:
            return float(self.confidence_margin)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values (see :meth:`from_dict`)."""
        return {"steps": [s.to_dict() for s in self.steps], "error_rate_margin": self.error_rate_margin,
                "latency_margin_pct": self.latency_margin_pct, "confidence_margin": self.confidence_margin}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutSchedule:
        """Rebuild a schedule from :meth:`to_dict` output."""
        return cls(**{k: v for k, v in data.items() if k in {a.name for a in attrs.fields(cls)}})


class RolloutStatus(enum.StrEnum):
    """ramping -> handed_over (last step passed: the test's own decision follows) | rolled_back."""

    RAMPING = "ramping"
    HANDED_OVER = "handed_over"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"


class StepDecision(enum.StrEnum):
    """What a look at the current step decides."""

    HOLD = "hold"
    ADVANCE = "advance"
    HANDOVER = "handover"
    ROLLBACK = "rollback"


@attrs.frozen
class RolloutState:
    """A rollout as stored: its schedule, current step and the counters when that step began."""

    test: str
    schedule: RolloutSchedule
    status: RolloutStatus
    step: int
    step_started_at: float
    #: Counter fields of (control, treatment) at the start of the current step.
    baseline: tuple[Mapping[str, float], Mapping[str, float]]
    reason: str = ""
    #: Every step change: ``{"time", "step", "traffic_pct", "decision", "reason"}``.
    history: tuple[Mapping[str, Any], ...] = ()

    @property
    def traffic_pct(self) -> float:
        """The treatment share now (0 once rolled back)."""
        if self.status is RolloutStatus.ROLLED_BACK:
            return 0.0
        return float(self.schedule.steps[self.step].traffic_pct)

    def moved(self, decision: StepDecision, now: float, reason: str,
              counters: tuple[Mapping[str, float], Mapping[str, float]]) -> RolloutState:
        """The state after *decision* (not ``hold``) taken at *now*."""
        if decision is StepDecision.ADVANCE:
            state = attrs.evolve(self, step=self.step + 1, step_started_at=now, baseline=counters, reason=reason)
        elif decision is StepDecision.HANDOVER:
            state = attrs.evolve(self, status=RolloutStatus.HANDED_OVER, reason=reason)
        elif decision is StepDecision.ROLLBACK:
            state = attrs.evolve(self, status=RolloutStatus.ROLLED_BACK, reason=reason)
        else:
            raise InvalidValueError("decision", "advance, handover or rollback", decision)
        event = {"time": now, "step": state.step, "traffic_pct": state.traffic_pct, "decision": decision.value,
                 "reason": reason}
        return attrs.evolve(state, history=(*self.history, event))

    def to_doc(self) -> dict[str, Any]:
        """The stored JSON document."""
        return {"test": self.test, "schedule": self.schedule.to_dict(), "status": self.status.value,
                "step": self.step, "step_started_at": self.step_started_at,
                "baseline": [dict(self.baseline[0]), dict(self.baseline[1])], "reason": self.reason,
                "history": [dict(h) for h in self.history]}

    @classmethod
    def from_doc(cls, doc: Any) -> RolloutState:
        """Parse a stored document."""
        base = doc["baseline"]
        return cls(doc["test"], RolloutSchedule.from_dict(doc["schedule"]), RolloutStatus(doc["status"]),
                   int(doc["step"]), float(doc["step_started_at"]), (dict(base[0]), dict(base[1])),
                   str(doc.get("reason", "")), tuple(doc.get("history", ())))


def step_stats(now: Mapping[str, float], baseline: Mapping[str, float]) -> VariantStats:
    """The statistics of the results since *baseline* (counter fields subtract exactly)."""
    return VariantStats.from_counters({k: float(v) - float(baseline.get(k, 0.0)) for k, v in now.items()})


def step_config(config: ABTestConfig, step: RolloutStep) -> ABTestConfig:
    """The test's configuration at *step*: its share, and intervals tightest at its ``min_results``."""
    fraction = round(float(step.traffic_pct) * (BUCKETS // 100)) / BUCKETS
    planned = max(10, math.ceil(step.min_results / fraction))
    return attrs.evolve(config, treatment_traffic_pct=step.traffic_pct, planned_samples=planned, min_samples=2,
                        auto_finalize=False)


@attrs.frozen
class StepVerdict:
    """The decision of one look at a step, why, and the evaluation it rests on."""

    decision: StepDecision
    reasons: tuple[str, ...]
    step: int
    traffic_pct: float
    n_control: int
    n_treatment: int
    elapsed_seconds: float
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible values."""
        return {"decision": self.decision.value, "reasons": list(self.reasons), "step": self.step,
                "traffic_pct": self.traffic_pct, "n_control": self.n_control, "n_treatment": self.n_treatment,
                "elapsed_seconds": self.elapsed_seconds, "evaluation": self.evaluation.to_dict()}


def _fmt(e: MetricEffect, x: float) -> str:
    return f"{x:+.4f}" if e.metric == "confidence" else f"{x * 100:+.2f}%"


def _non_inferior(evaluation: Evaluation, schedule: RolloutSchedule) -> list[str]:
    """Reasons the "no harm" evidence is missing (empty: every metric with data is within its margin)."""
    missing = []
    for e in evaluation.effects:
        if e.verdict == "no data":
            continue
        # Harm, positive = worse, on the effect's display scale (relative for latency).
        bound = -e.lower if e.higher_is_better else e.upper
        margin = schedule.margin(e.metric)
        if margin is None:
            ok, margin = e.non_inferior, float(e.tolerance)
        else:
            ok = math.isfinite(bound) and bound < margin
        if not ok:
            missing.append(f"{e.metric}: harm up to {_fmt(e, bound)} not yet excluded (margin {_fmt(e, margin)})")
    return missing


def judge_step(
    control: VariantStats | SufficientStats, treatment: VariantStats | SufficientStats, config: ABTestConfig,
    schedule: RolloutSchedule, step: int, elapsed_seconds: float,
) -> StepVerdict:
    """Judge step *step* of a rollout from the results collected during it (pure).

    *control* and *treatment* are the step's results (see :func:`step_stats`);
    *config* is the test's configuration (its ``alpha`` and guardrails apply).
    """
    if not 0 <= step < len(schedule.steps):
        raise InvalidValueError("step", f"a step index in [0, {schedule.last}]", step)
    current = schedule.steps[step]
    evaluation = evaluate(control, treatment, step_config(config, current))
    worse = [f"{e.metric} significantly worse than its guardrail allows (CI [{e.lower:+.4g}, {e.upper:+.4g}])"
             for e in evaluation.effects if e.verdict == "worse"]
    args = (step, float(current.traffic_pct), control.n, treatment.n, float(elapsed_seconds), evaluation)
    if evaluation.decision is Decision.HALT:
        return StepVerdict(StepDecision.ROLLBACK, evaluation.reasons, *args)
    if worse:
        return StepVerdict(StepDecision.ROLLBACK, tuple(worse), *args)
    waiting = []
    if treatment.n < current.min_results:
        waiting.append(f"{treatment.n} of {current.min_results} treatment results at {current.traffic_pct:g}%")
    if elapsed_seconds < current.min_seconds:
        waiting.append(f"{elapsed_seconds:.0f} of {current.min_seconds:g} seconds at {current.traffic_pct:g}%")
    waiting += _non_inferior(evaluation, schedule)
    if waiting:
        return StepVerdict(StepDecision.HOLD, tuple(waiting), *args)
    done = StepDecision.HANDOVER if step == schedule.last else StepDecision.ADVANCE
    return StepVerdict(done, (f"no harm shown at {current.traffic_pct:g}% on {treatment.n} treatment results",),
                       *args)

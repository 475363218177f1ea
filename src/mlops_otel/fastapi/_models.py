"""Pydantic request and response models of the management API (its OpenAPI schemas).

The response models describe the JSON views of :mod:`mlops_otel._views`
exactly (a test checks every view against its model); defaults of the
request models are read from the SDK's own attrs classes, so the API cannot
advertise a default the SDK does not use.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from pydantic import BaseModel, ConfigDict, Field

from ..ab import ABTestConfig, Guardrails

__all__ = [
    "ABTestChangeOut",
    "ABTestConfigIn",
    "ABTestConfigOut",
    "ABTestOut",
    "AbortIn",
    "ChampionChangeOut",
    "ConfidenceIntervalOut",
    "DriftReportOut",
    "ErrorOut",
    "EvaluationOut",
    "FinalizeIn",
    "GuardrailsModel",
    "MetricEffectOut",
    "ModelMetricsOut",
    "ModelTypeOut",
    "ModelVersionOut",
    "OutputDriftOut",
    "PromoteIn",
    "RegisterIn",
    "RoleChangeOut",
    "RollbackIn",
    "RolloutOut",
]


def _default(cls: type, name: str) -> Any:
    return getattr(attrs.fields(cls), name).default


def _config_default(name: str) -> Any:
    return _default(ABTestConfig, name)


def _guardrail_default(name: str) -> Any:
    return _default(Guardrails, name)


class ErrorOut(BaseModel):
    """An error: ``detail`` says what went wrong and what would be accepted."""

    detail: str


# ------------------------------------------------------------------ A/B tests
class GuardrailsModel(BaseModel):
    """How much worse the treatment may be before the test is rolled back."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate_increase: float = Field(
        _guardrail_default("max_error_rate_increase"),
        description="Tolerated absolute increase of the error rate (0.01 = one percentage point).")
    max_latency_increase_pct: float = Field(
        _guardrail_default("max_latency_increase_pct"),
        description="Tolerated relative increase of the mean latency, in percent.")
    max_confidence_decrease: float = Field(
        _guardrail_default("max_confidence_decrease"),
        description="Tolerated absolute decrease of the mean confidence.")


class MetricSpecModel(BaseModel):
    """A custom metric of a test (#12): recorded with ``record_result(..., metrics={name: value})``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Metric name (letters, digits, '_', '-', '.'; not a built-in metric).")
    kind: Literal["binary", "continuous"] = Field("continuous", description="binary: a bool per result.")
    direction: Literal["higher", "lower"] = Field("higher", description="Which way is better.")
    role: Literal["primary", "guardrail"] = Field("guardrail", description="At most one metric is primary.")
    margin: float = Field(0.0, description="Non-inferiority margin of a guardrail, in the metric's unit.")


class ABTestConfigIn(BaseModel):
    """Start an A/B test: the fields of :class:`mlops_otel.ABTestConfig`.

    Ranges are checked by the SDK; a value out of range is answered with 422
    naming the field, the expectation and the value.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique test name (never reused on the store).")
    model_type: str = Field(description="Model type whose versions are compared, e.g. 'gnn'.")
    control_version: str = Field(description="Registered version serving the control variant.")
    treatment_version: str = Field(description="Registered version serving the treatment variant.")
    treatment_traffic_pct: float = Field(_config_default("treatment_traffic_pct"),
                                         description="Percent of users in treatment, in (0, 100).")
    duration_days: float = Field(_config_default("duration_days"),
                                 description="Planned duration; the test resolves when it ends.")
    min_samples: int = Field(_config_default("min_samples"),
                             description="Results per variant before anything but a sample-ratio halt.")
    alpha: float = Field(_config_default("alpha"),
                         description="Probability of a wrong promote or rollback over the whole test.")
    planned_samples: int = Field(_config_default("planned_samples"),
                                 description="Total results at which the confidence sequences are tightest.")
    guardrails: GuardrailsModel | None = Field(None, description="Tolerances; omitted means the defaults.")
    auto_finalize: bool = Field(_config_default("auto_finalize"),
                                description="Act on promote/rollback/halt as soon as an evaluation decides.")
    salt: str | None = Field(None, description="Assignment hash salt; omitted means the test name.")
    srm_alpha: float = Field(_config_default("srm_alpha"),
                             description="Significance of the sample-ratio-mismatch check.")
    primary_metric: str | None = Field(None, description="The metric to improve (default: confidence).")
    metrics: list[MetricSpecModel] = Field(default_factory=list, description="Custom metrics.")
    min_events: int = Field(_config_default("min_events"),
                            description="Expected events per arm before a proportion may decide.")
    segment_by: str | None = Field(None, description="Result attribute to break the report down by.")


class ABTestConfigOut(BaseModel):
    """A test's full configuration as stored."""

    name: str
    model_type: str
    control_version: str
    treatment_version: str
    treatment_traffic_pct: float
    duration_days: float
    min_samples: int
    alpha: float
    planned_samples: int
    guardrails: GuardrailsModel
    auto_finalize: bool
    salt: str
    srm_alpha: float
    primary_metric: str | None
    metrics: list[MetricSpecModel]
    min_events: int
    segment_by: str | None


class ABTestOut(BaseModel):
    """An A/B test: life-cycle state, schedule (Unix seconds) and configuration."""

    name: str
    state: Literal["active", "finalizing", "promoted", "rolled_back", "aborted"]
    started_at: float
    ends_at: float
    finished_at: float | None
    outcome: Literal["promote", "rollback"] | None
    reason: str | None
    config: ABTestConfigOut


class MetricEffectOut(BaseModel):
    """The treatment's effect on one metric with its anytime-valid confidence sequence.

    Differences (treatment - control) for ``error_rate`` and ``confidence``,
    relative change (treatment / control - 1) for ``latency_ms``; ``null``
    where there is no data yet.
    """

    metric: str
    control: float | None
    treatment: float | None
    estimate: float | None
    lower: float | None
    upper: float | None
    p_value: float | None
    tolerance: float
    verdict: Literal["better", "worse", "inconclusive", "no data"]
    role: Literal["primary", "guardrail"]
    non_inferior: bool
    higher_is_better: bool
    n_control: int
    n_treatment: int


class SegmentOut(BaseModel):
    """One segment's effects (Bonferroni-corrected over segments; reported only, never moves roles)."""

    segment: str
    n_control: int
    n_treatment: int
    indication: Literal["promote", "rollback", "continue", "halt"]
    effects: dict[str, MetricEffectOut]


class EvaluationOut(BaseModel):
    """An evaluation: the decision, why, and the evidence."""

    test: str
    decision: Literal["promote", "rollback", "continue", "halt"]
    recommendation: str
    reasons: list[str]
    n_control: int
    n_treatment: int
    effects: dict[str, MetricEffectOut]
    srm_p_value: float | None
    alpha: float
    ended: bool
    primary: str
    excluded_control: int = Field(description="Results delivered after the watermark, left out.")
    excluded_treatment: int
    watermark: float | None = Field(description="Time up to which every live worker had delivered.")
    segments: list[SegmentOut]
    applied: Literal["promoted", "rolled_back", "aborted"] | None = Field(
        description="What this evaluation did to the test (auto_finalize), or null.")
    roles_moved: bool
    evaluated_at: float | None


class RolloutStepOut(BaseModel):
    """One step of a rollout schedule."""

    traffic_pct: float
    min_results: int
    min_seconds: float


class RolloutScheduleOut(BaseModel):
    """A rollout's steps and its own "no harm" margins (``null``: the test's guardrail margins)."""

    steps: list[RolloutStepOut]
    error_rate_margin: float | None
    latency_margin_pct: float | None
    confidence_margin: float | None


class RolloutEventOut(BaseModel):
    """One step change of a rollout (``decision``: start, advance, handover, rollback, promote, ended_*)."""

    time: float
    step: int
    traffic_pct: float
    decision: str
    reason: str


class StepVerdictOut(BaseModel):
    """The current step judged on the results collected since it began, at its one split."""

    decision: Literal["hold", "advance", "handover", "rollback"]
    reasons: list[str]
    step: int
    traffic_pct: float
    n_control: int
    n_treatment: int
    elapsed_seconds: float
    evaluation: EvaluationOut


class RolloutOut(BaseModel):
    """A progressive rollout: status, current step and share, schedule, history and the step's verdict."""

    test: str
    status: Literal["ramping", "handed_over", "rolled_back", "promoted"]
    step: int = Field(description="Index of the current step (0-based).")
    steps: int
    traffic_pct: float = Field(description="Treatment share now (0 once rolled back).")
    step_started_at: float
    reason: str
    schedule: RolloutScheduleOut
    history: list[RolloutEventOut]
    verdict: StepVerdictOut | None = Field(description="null when the test had ended.")
    changed: Literal["advance", "rollback", "handover", "promote"] | None = Field(
        description="The step change this call made (check only), or null.")
    roles_moved: bool


class FinalizeIn(BaseModel):
    """Finish a test: ``promote`` makes the treatment champion, ``rollback`` keeps the control."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["promote", "rollback"]
    reason: str | None = Field(None, description="Recorded in the test and the registry history.")


class AbortIn(BaseModel):
    """Stop a test without changing the champion."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, description="Recorded in the test and the registry history.")


class ABTestChangeOut(BaseModel):
    """The test after a finalize or abort; ``changed`` is false when another caller got there first."""

    changed: bool
    test: ABTestOut


# ------------------------------------------------------------------- registry
class ModelMetricsOut(BaseModel):
    """Running performance metrics of a version (``null`` before the first result)."""

    count: int
    error_rate: float | None
    latency_mean_ms: float | None
    latency_variance: float | None
    confidence_mean: float | None
    confidence_variance: float | None


class ModelVersionOut(BaseModel):
    """A registered model version."""

    model_type: str
    version: str
    role: Literal["champion", "challenger", "candidate", "archived"]
    created_at: float
    metadata: dict[str, Any]
    metrics: ModelMetricsOut


class ModelTypeOut(BaseModel):
    """A model type with its current roles."""

    model_type: str
    champion: str | None
    challenger: str | None
    versions: int


class RegisterIn(BaseModel):
    """Register a model version (the first of a model type becomes its champion)."""

    model_config = ConfigDict(extra="forbid")

    version: str
    metadata: dict[str, Any] | None = Field(None, description="Any JSON object, e.g. the training run.")


class PromoteIn(BaseModel):
    """Make a version the champion."""

    model_config = ConfigDict(extra="forbid")

    version: str
    reason: str = Field(description="Why; kept in the registry history.")


class RollbackIn(BaseModel):
    """Restore the previous champion."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="Why; kept in the registry history.")


class ChampionChangeOut(BaseModel):
    """The champion after a promote or rollback; ``changed`` is false when it already was."""

    changed: bool
    champion: ModelVersionOut


class RoleChangeOut(BaseModel):
    """One entry of a model type's role history (``time`` in Unix seconds)."""

    time: float
    model_type: str
    action: str
    version: str | None
    previous_champion: str | None
    reason: str


# ---------------------------------------------------------------------- drift
class OutputDriftOut(BaseModel):
    """Drift of one monitored output (``anomaly_score`` or ``confidence``)."""

    name: str
    ks_statistic: float | None = Field(description="Two-sample KS distance to the reference, 0..1.")
    p_value: float | None = Field(description="Asymptotic two-sided KS p-value.")
    psi: float | None = Field(description="Population stability index over reference-quantile bins.")
    reference_mean: float | None
    production_mean: float | None
    significant: bool


class ConfidenceIntervalOut(BaseModel):
    """A point estimate with a two-sided interval at ``level``."""

    estimate: float | None
    low: float | None
    high: float | None
    level: float


class DriftReportOut(BaseModel):
    """A drift detector's report over the shared windows: the seed's keys and the statistics behind them."""

    key: str = Field(description="'<model_type>:<version>'")
    model_type: str
    version: str
    current_drift_score: float | None = Field(description="Largest KS statistic over the outputs, 0..1.")
    alert_triggered: bool
    level: Literal["insufficient_data", "ok", "warning", "alert"]
    recommendation: str
    threshold: float = Field(description="The score at which the alert fires.")
    clear_threshold: float = Field(description="The score below which a firing alert clears (hysteresis).")
    ks_statistic: dict[str, float | None]
    p_value: dict[str, float | None]
    psi: dict[str, float | None]
    outputs: dict[str, OutputDriftOut]
    confidence_degradation: ConfidenceIntervalOut | None = Field(
        description="Fall of the mean confidence against the reference (positive = worse).")
    performance_drift: bool
    window_size: int
    min_samples: int
    production_samples: int
    reference_samples: int
    reference_source: str | None = Field(description="'explicit' (set_reference) or 'production' (first samples).")
    total_samples: int
    invalid_samples: int
    window_start: float | None
    window_end: float | None
    time_span_seconds: float | None = Field(description="Seconds between the window's first and last sample; "
                                                        "null before there are two.")
    evaluated_at: float
    scope: str

"""A/B test configuration: validated, frozen, JSON round-trippable (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import attrs

from ..validation import InvalidValueError, Validator, check_name, in_range, is_bool, one_of

__all__ = ["BUILTIN_METRICS", "BUCKETS", "ABTestConfig", "Guardrails", "InvalidConfigError", "MetricSpec"]

#: Hash buckets per test: assignment granularity is 1/BUCKETS = 0.0001 %.
BUCKETS = 1_000_000
_BUCKETS_PER_PCT = BUCKETS // 100


class InvalidConfigError(InvalidValueError):
    """An A/B test configuration value is invalid; names the field, the expectation and the value."""


def _name(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    try:
        check_name(attribute.name, value)
    except InvalidValueError as exc:
        raise InvalidConfigError(exc.field, exc.expected, exc.value) from None


def _config_error(validator: Validator) -> Validator:
    """A :mod:`mlops_otel.validation` validator raising :class:`InvalidConfigError` (an ``InvalidValueError``)."""

    def check(instance: object, attribute: Any, value: object) -> None:
        try:
            validator(instance, attribute, value)
        except InvalidConfigError:
            raise
        except InvalidValueError as exc:
            raise InvalidConfigError(exc.field, exc.expected, exc.value) from None

    return check


def _range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Validator:
    return _config_error(in_range(low, high, low_open=low_open, high_open=high_open))


def _int_at_least(minimum: int) -> Validator:
    return _config_error(in_range(minimum, math.inf, integer=True))


_bool = _config_error(is_bool())


@attrs.frozen(kw_only=True)
class Guardrails:
    """Non-inferiority margins of the built-in metrics: how much worse the treatment may be.

    A guardrail is *breached* (rollback) only when its always-valid interval
    lies entirely beyond the margin, so noise alone never triggers it; a
    promotion needs every guardrail's interval entirely *within* its margin
    (non-inferiority shown). A margin of zero could never be shown, so the
    defaults are small but positive: 0.5 percentage points of error rate,
    10 % of (geometric mean) latency, 0.005 of mean confidence.
    """

    #: Tolerated absolute increase of the error rate (0.005 = half a percentage point).
    max_error_rate_increase: float = attrs.field(default=0.005, validator=_range(0.0, 1.0, high_open=True))
    #: Tolerated relative increase of the geometric mean latency, in percent.
    max_latency_increase_pct: float = attrs.field(default=10.0, validator=_range(0.0, 1000.0))
    #: Tolerated absolute decrease of the mean confidence.
    max_confidence_decrease: float = attrs.field(default=0.005, validator=_range(0.0, 1.0, high_open=True))

    def to_dict(self) -> dict[str, float]:
        """The guardrails as JSON-compatible values."""
        return {
            "max_error_rate_increase": float(self.max_error_rate_increase),
            "max_latency_increase_pct": float(self.max_latency_increase_pct),
            "max_confidence_decrease": float(self.max_confidence_decrease),
        }


_PCT = _range(0.0, 100.0, low_open=True, high_open=True)

#: The metrics every result carries: error rate, latency (ms) and confidence.
BUILTIN_METRICS = ("error_rate", "latency_ms", "confidence")
_KINDS = ("binary", "continuous")
_DIRECTIONS = ("higher", "lower")
_ROLES = ("primary", "guardrail")


def _choice(options: tuple[str, ...]) -> Validator:
    return _config_error(one_of(options))


def _metric_name(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    _name(_, attribute, value)
    if value in BUILTIN_METRICS or not all(c.isalnum() or c in "_-." for c in str(value)):
        raise InvalidConfigError(attribute.name, "a metric name of letters, digits, '_', '-' or '.' that is "
                                 f"not a built-in metric ({', '.join(BUILTIN_METRICS)})", value)


@attrs.frozen(kw_only=True)
class MetricSpec:
    """A custom metric of a test, recorded with ``record_result(..., metrics={name: value})``.

    ``kind`` is ``"binary"`` (a bool per result, e.g. thumbs-up feedback:
    compared as a proportion) or ``"continuous"`` (a finite float, e.g. RAG
    tokens or cost: compared as a mean). ``direction`` says which way is
    better. ``role`` ``"primary"`` makes it the metric the test must improve
    (at most one metric is primary); a ``"guardrail"`` must not get worse by
    more than ``margin`` (absolute, in the metric's unit).
    """

    name: str = attrs.field(validator=_metric_name)
    kind: str = attrs.field(default="continuous", validator=_choice(_KINDS))
    direction: str = attrs.field(default="higher", validator=_choice(_DIRECTIONS))
    role: str = attrs.field(default="guardrail", validator=_choice(_ROLES))
    margin: float = attrs.field(default=0.0, validator=_range(0.0, 1e300))

    @property
    def higher_is_better(self) -> bool:
        """Whether larger values are better."""
        return self.direction == "higher"

    def to_dict(self) -> dict[str, Any]:
        """The metric as JSON-compatible values."""
        return {"name": self.name, "kind": self.kind, "direction": self.direction, "role": self.role,
                "margin": float(self.margin)}


def _metrics(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return tuple(MetricSpec(**v) if isinstance(v, Mapping) else v for v in value)
    return value


def _check_metrics(_: object, attribute: attrs.Attribute[tuple[MetricSpec, ...]], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, MetricSpec) for v in value):
        raise InvalidConfigError(attribute.name, "a sequence of MetricSpec or of mappings of its fields", value)
    names = [v.name for v in value]
    if len(set(names)) != len(names):
        raise InvalidConfigError(attribute.name, "metrics with distinct names", names)
    if sum(v.role == "primary" for v in value) > 1:
        raise InvalidConfigError(attribute.name, "at most one metric with role 'primary'",
                                 [v.name for v in value if v.role == "primary"])


def _optional_name(_: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None:
        _name(_, cast(Any, attribute), value)


def _guardrails(value: object) -> object:
    if isinstance(value, Mapping):
        return Guardrails(**value)
    return value


def _check_guardrails(_: object, attribute: attrs.Attribute[Guardrails], value: object) -> None:
    if not isinstance(value, Guardrails):
        raise InvalidConfigError(attribute.name, "a Guardrails or a mapping of its fields", value)


def _default_salt(self: ABTestConfig) -> str:
    return self.name


@attrs.frozen(kw_only=True)
class ABTestConfig:
    """One A/B test: which versions, how much traffic, for how long, and how to decide.

    ``treatment_traffic_pct`` percent of users (quantised to 0.0001 %) get the
    treatment version, the rest the control. ``salt`` (default: the test
    name) seeds the assignment hash; reuse it to keep users in their variant
    across tests.
    """

    name: str = attrs.field(validator=_name)
    model_type: str = attrs.field(validator=_name)
    control_version: str = attrs.field(validator=_name)
    treatment_version: str = attrs.field(validator=_name)
    treatment_traffic_pct: float = attrs.field(default=10.0, validator=_PCT)
    duration_days: float = attrs.field(default=7.0, validator=_range(0.0, 3650.0, low_open=True))
    #: Results each variant needs before anything but a sample-ratio halt is decided.
    min_samples: int = attrs.field(default=1000, validator=_int_at_least(2))
    #: Probability, over the whole test however often it is evaluated, of a wrong promote or rollback.
    alpha: float = attrs.field(default=0.05, validator=_range(0.0, 0.5, low_open=True))
    #: Total results (both variants) at which the confidence sequences are tightest.
    planned_samples: int = attrs.field(default=20_000, validator=_int_at_least(10))
    guardrails: Guardrails = attrs.field(factory=Guardrails, converter=_guardrails,
                                         validator=_check_guardrails)
    #: Apply promote/rollback (and abort on halt) as soon as an evaluation decides it.
    auto_finalize: bool = attrs.field(default=False, validator=_bool)
    salt: str = attrs.field(default=attrs.Factory(_default_salt, takes_self=True), validator=_name)
    #: Level of the sequential sample-ratio-mismatch test (probability of ever halting a healthy test).
    srm_alpha: float = attrs.field(default=0.001, validator=_range(0.0, 0.5, low_open=True))
    #: The metric the treatment must improve: a built-in one or a custom metric's name
    #: (default: the custom metric with role "primary", else ``confidence``).
    primary_metric: str | None = attrs.field(default=None, validator=_optional_name)
    #: Custom metrics recorded with ``record_result(..., metrics={...})``.
    metrics: tuple[MetricSpec, ...] = attrs.field(default=(), converter=_metrics, validator=_check_metrics)
    #: Events (and non-events) each arm needs, observed or expected at the pooled rate, before a
    #: proportion may decide better or worse.
    min_events: int = attrs.field(default=10, validator=_int_at_least(1))
    #: A result attribute to break the report down by (reported only; never moves roles).
    segment_by: str | None = attrs.field(default=None, validator=_optional_name)

    # Derived once: the assignment hot path reads these instead of recomputing.
    treatment_buckets: int = attrs.field(init=False, repr=False, eq=False)
    salt_prefix: bytes = attrs.field(init=False, repr=False, eq=False)
    #: A digest is in treatment iff it sorts below this (see :mod:`mlops_otel.ab._assign`).
    treatment_threshold: bytes = attrs.field(init=False, repr=False, eq=False)

    @treatment_buckets.default
    def _treatment_buckets(self) -> int:
        # Defaults of derived fields run before the validators: check the input first.
        _PCT(self, attrs.fields(ABTestConfig).treatment_traffic_pct, self.treatment_traffic_pct)
        buckets = round(float(self.treatment_traffic_pct) * _BUCKETS_PER_PCT)
        if not 0 < buckets < BUCKETS:
            raise InvalidConfigError("treatment_traffic_pct", "at least 0.0001 and at most 99.9999",
                                     self.treatment_traffic_pct)
        return buckets

    @salt_prefix.default
    def _salt_prefix(self) -> bytes:
        # A bad salt is reported by its validator, which runs after this default.
        return (self.salt + ".").encode("utf-8") if isinstance(self.salt, str) else b""

    @treatment_threshold.default
    def _treatment_threshold(self) -> bytes:
        # bucket(h) = floor(h * BUCKETS / 2**64) < t  <=>  h < ceil(t * 2**64 / BUCKETS); as a 32-byte
        # big-endian bound, comparing whole SHA-256 digests compares their first 8 bytes.
        bound = -(-self.treatment_buckets * 2**64 // BUCKETS)
        return bound.to_bytes(8, "big") + bytes(24)

    def __attrs_post_init__(self) -> None:
        if self.treatment_version == self.control_version:
            raise InvalidConfigError("treatment_version", "different from control_version",
                                     self.treatment_version)
        known = (*BUILTIN_METRICS, *(m.name for m in self.metrics))
        declared = [m.name for m in self.metrics if m.role == "primary"]
        if self.primary_metric is not None and self.primary_metric not in known:
            raise InvalidConfigError("primary_metric", "a built-in or declared metric (" + ", ".join(known) + ")",
                                     self.primary_metric)
        if self.primary_metric is not None and declared and declared[0] != self.primary_metric:
            raise InvalidConfigError("primary_metric", f"the metric declared with role 'primary' ({declared[0]!r})",
                                     self.primary_metric)

    @property
    def primary(self) -> str:
        """The name of the primary metric."""
        if self.primary_metric is not None:
            return self.primary_metric
        declared = [m.name for m in self.metrics if m.role == "primary"]
        return declared[0] if declared else "confidence"

    @property
    def treatment_fraction(self) -> float:
        """The expected share of treatment results, exactly as assignment quantises it."""
        return self.treatment_buckets / BUCKETS

    @property
    def duration_seconds(self) -> float:
        """``duration_days`` in seconds."""
        return float(self.duration_days) * 86_400.0

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-compatible values (see :meth:`from_dict`)."""
        return {
            "name": self.name, "model_type": self.model_type,
            "control_version": self.control_version, "treatment_version": self.treatment_version,
            "treatment_traffic_pct": float(self.treatment_traffic_pct),
            "duration_days": float(self.duration_days), "min_samples": self.min_samples,
            "alpha": float(self.alpha), "planned_samples": self.planned_samples,
            "guardrails": self.guardrails.to_dict(), "auto_finalize": self.auto_finalize,
            "salt": self.salt, "srm_alpha": float(self.srm_alpha), "primary_metric": self.primary_metric,
            "metrics": [m.to_dict() for m in self.metrics], "min_events": self.min_events,
            "segment_by": self.segment_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ABTestConfig:
        """Rebuild a configuration from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {a.name for a in attrs.fields(cls) if a.init}
        return cls(**{k: v for k, v in data.items() if k in names})

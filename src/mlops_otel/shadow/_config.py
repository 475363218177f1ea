"""What a shadow run compares and when a challenger is ready: validated, frozen values (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..validation import InvalidValueError

__all__ = ["Comparison", "Difference", "Flip", "ShadowConfig"]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _name(_: object, attribute: attrs.Attribute[str], value: object) -> None:
    if (not isinstance(value, str) or not value.strip() or "{" in value or "}" in value
            or any(ord(c) < 32 for c in value)):
        raise InvalidValueError(attribute.name, "a non-empty string without braces or control characters", value)


def _number(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Any:
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    expected = f"a finite number in {lo}{low:g}, {high:g}{hi}"

    def check(_: object, attribute: attrs.Attribute[float], value: object) -> None:
        ok = _is_number(value)
        if ok:
            v = float(value)  # type: ignore[arg-type]  # _is_number checked it is int or float
            ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise InvalidValueError(attribute.name, expected, value)

    return check


def _int(low: int, high: int) -> Callable[[object, attrs.Attribute[int], object], None]:
    def check(_: object, attribute: attrs.Attribute[int], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidValueError(attribute.name, f"an integer in [{low}, {high}]", value)

    return check


@attrs.frozen
class Difference:
    """Champion and challenger disagree when ``|challenger - champion|`` of *output* exceeds *tolerance*.

    The absolute difference of every pair is also recorded (histogram
    ``shadow_output_difference``), so the tolerance can be chosen afterwards.
    """

    output: str = attrs.field(validator=_name)
    tolerance: float = attrs.field(validator=_number(0.0, math.inf, high_open=True))

    @property
    def name(self) -> str:
        """The ``comparison`` label value: ``<output>_difference``."""
        return f"{self.output}_difference"

    def compare(self, champion: float, challenger: float) -> tuple[float, bool]:
        """``(|difference|, disagree)`` for one pair of values."""
        d = abs(challenger - champion)
        return d, d > self.tolerance

    def describe(self) -> str:
        """How the comparison decides, in words."""
        return f"|{self.output} difference| > {self.tolerance:g}"


@attrs.frozen
class Flip:
    """Champion and challenger disagree when they fall on different sides of *threshold* for *output*.

    That is, the decision the service takes from the output (e.g. "anomaly"
    when ``anomaly_score >= 0.5``) would flip.
    """

    output: str = attrs.field(validator=_name)
    threshold: float = attrs.field(validator=_number(-math.inf, math.inf, low_open=True, high_open=True))

    @property
    def name(self) -> str:
        """The ``comparison`` label value: ``<output>_flip``."""
        return f"{self.output}_flip"

    def compare(self, champion: float, challenger: float) -> tuple[float, bool]:
        """``(|difference|, disagree)`` for one pair of values."""
        return abs(challenger - champion), (champion >= self.threshold) != (challenger >= self.threshold)

    def describe(self) -> str:
        """How the comparison decides, in words."""
        return f"{self.output} decision at {self.threshold:g} flips"


Comparison = Difference | Flip


def _comparisons(value: object) -> object:
    if isinstance(value, (Difference, Flip)):
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return tuple(value)
    return value


def _check_comparisons(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (not isinstance(value, tuple) or not value
            or not all(isinstance(c, (Difference, Flip)) for c in value)):
        raise InvalidValueError(attribute.name, "one or more Difference / Flip comparisons", value)
    names = [c.name for c in value]
    if len(set(names)) != len(names):
        raise InvalidValueError(attribute.name, "comparisons with distinct names", tuple(names))


@attrs.frozen(kw_only=True)
class ShadowConfig:
    """One shadow run: which challenger, on what share of requests, compared how, ready when.

    Sampling and queueing
        ``sample_rate`` of the submitted requests (a uniform random draw per
        request) are queued, at most ``queue_size`` at a time, for ``workers``
        threads; a request that finds the queue full is dropped and counted.

    Readiness (:class:`~mlops_otel.shadow.ShadowReport`)
        Ready for an A/B test when at least ``min_pairs`` pairs completed and,
        at ``confidence_level`` (Clopper-Pearson, two-sided), the upper bound
        of the challenger's error rate is at most ``max_error_rate`` and the
        upper bound of every comparison's disagreement rate at most
        ``max_disagreement``; the KS distance between the challenger's and the
        champion's outputs is at most ``max_output_drift``; and, when the
        caller passes the champion's latency, the challenger's p99 latency is
        at most ``max_latency_ratio`` times the champion's.
    """

    model_type: str = attrs.field(validator=_name)
    challenger_version: str = attrs.field(validator=_name)
    comparisons: tuple[Comparison, ...] = attrs.field(converter=_comparisons, validator=_check_comparisons)
    sample_rate: float = attrs.field(default=1.0, validator=_number(0.0, 1.0))
    queue_size: int = attrs.field(default=1000, validator=_int(1, 10_000_000))
    workers: int = attrs.field(default=1, validator=_int(1, 64))
    #: Recent outputs (per output name) kept for the drift comparison and latency quantiles.
    window: int = attrs.field(default=2000, validator=_int(20, 10_000_000))
    #: The output drift gauge is recomputed every this many completed pairs.
    drift_every: int = attrs.field(default=250, validator=_int(1, 10_000_000))
    min_pairs: int = attrs.field(default=500, validator=_int(1, 1_000_000_000))
    max_disagreement: float = attrs.field(default=0.05, validator=_number(0.0, 1.0))
    max_error_rate: float = attrs.field(default=0.01, validator=_number(0.0, 1.0))
    max_output_drift: float = attrs.field(default=0.3, validator=_number(0.0, 1.0))
    max_latency_ratio: float = attrs.field(default=1.5, validator=_number(0.0, math.inf, low_open=True))
    confidence_level: float = attrs.field(default=0.95, validator=_number(0.5, 1.0, high_open=True))

    @property
    def outputs(self) -> tuple[str, ...]:
        """The output names the comparisons read, in order of first use."""
        return tuple(dict.fromkeys(c.output for c in self.comparisons))

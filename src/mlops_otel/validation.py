"""Input validation: one error type and the attrs validators every value of the package uses.

Every invalid argument raises :class:`InvalidValueError`, a :class:`ValueError`
that names the field, what it must be, and the value it got:

>>> from mlops_otel.validation import InvalidValueError, in_range
>>> import attrs
>>> @attrs.frozen
... class Window:
...     size: int = attrs.field(validator=in_range(1, 10_000, integer=True))
>>> Window(0)
Traceback (most recent call last):
...
mlops_otel.validation.InvalidValueError: size must be an integer in [1, 10000], got 0

The factories return attrs validators (``validator(instance, attribute, value)``);
:func:`check` applies one outside attrs, for function arguments.
This module imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = [
    "InvalidValueError",
    "Validator",
    "check",
    "check_name",
    "check_result",
    "check_result_reporting",
    "finite",
    "in_range",
    "instance_of",
    "is_bool",
    "name",
    "non_empty_str",
    "one_of",
    "optional",
    "positive",
]

T = TypeVar("T")

#: An attrs validator: ``validator(instance, attribute, value)``; raises :class:`InvalidValueError`.
Validator = Callable[[Any, Any, Any], None]


class InvalidValueError(ValueError):
    """An argument is invalid; names the field, the expectation and the value.

    >>> str(InvalidValueError("confidence", "a number in [0, 1]", 1.5))
    'confidence must be a number in [0, 1], got 1.5'
    """

    def __init__(self, field: str, expected: str, value: object) -> None:
        self.field = field
        self.expected = expected
        self.value = value
        super().__init__(f"{field} must be {expected}, got {value!r}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes despite the 3-argument init
        return (type(self), (self.field, self.expected, self.value))


class _Attribute:
    """Stands in for an ``attrs.Attribute`` when a validator checks a plain argument."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def check(field: str, value: T, *validators: Validator) -> T:
    """Run *validators* on *value* as if it were the attrs field *field*; return *value*.

    >>> check("timeout", 2.5, positive())
    2.5
    """
    attribute = _Attribute(field)
    for validator in validators:
        validator(None, attribute, value)
    return value


def _real(value: object) -> float | None:
    """*value* as a float if it is a real number (not a bool), else ``None``."""
    kind = type(value)
    if kind is float or kind is int:
        return float(value)  # type: ignore[arg-type]  # the exact type was just checked
    if kind is bool or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def finite() -> Validator:
    """A finite real number (not a bool, not NaN or infinite)."""

    def validate(_: object, attribute: Any, value: object) -> None:
        v = _real(value)
        if v is None or not math.isfinite(v):
            raise InvalidValueError(attribute.name, "a finite number", value)

    return validate


def in_range(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False, integer: bool = False
) -> Validator:
    """A finite number (an int when *integer*) between *low* and *high*, bounds included unless open."""
    lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
    kind = "an integer" if integer else "a finite number"
    if math.isinf(high) and not math.isinf(low):
        expected = f"{kind} {'>' if low_open else '>='} {_fmt(low)}"
    else:
        expected = f"{kind} in {lo}{_fmt(low)}, {_fmt(high)}{hi}"

    def validate(_: object, attribute: Any, value: object) -> None:
        v = _real(value)
        ok = v is not None and math.isfinite(v) and (not integer or isinstance(value, numbers.Integral))
        if ok:
            assert v is not None
            ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise InvalidValueError(attribute.name, expected, value)

    return validate


def positive(*, integer: bool = False) -> Validator:
    """A finite number (an int when *integer*) greater than zero."""
    return in_range(0, math.inf, low_open=True, high_open=True, integer=integer)


def is_bool() -> Validator:
    """Exactly ``True`` or ``False``."""

    def validate(_: object, attribute: Any, value: object) -> None:
        if not isinstance(value, bool):
            raise InvalidValueError(attribute.name, "a bool", value)

    return validate


def one_of(choices: Iterable[object]) -> Validator:
    """One of *choices* (compared with ``==``)."""
    options = tuple(choices)
    expected = "one of " + ", ".join(repr(c) for c in options)

    def validate(_: object, attribute: Any, value: object) -> None:
        if value not in options:
            raise InvalidValueError(attribute.name, expected, value)

    return validate


def non_empty_str() -> Validator:
    """A string with at least one non-blank character."""

    def validate(_: object, attribute: Any, value: object) -> None:
        if not isinstance(value, str) or not value.strip():
            raise InvalidValueError(attribute.name, "a non-empty string", value)

    return validate


def instance_of(*types: type, expected: str | None = None) -> Validator:
    """An instance of one of *types* (described as *expected* in the message)."""
    text = expected or ("an instance of " + " or ".join(t.__name__ for t in types))

    def validate(_: object, attribute: Any, value: object) -> None:
        if not isinstance(value, types):
            raise InvalidValueError(attribute.name, text, value)

    return validate


def optional(validator: Validator) -> Validator:
    """``None`` or a value *validator* accepts."""

    def validate(instance: object, attribute: Any, value: object) -> None:
        if value is not None:
            validator(instance, attribute, value)

    return validate


_NAME_EXPECTED = "a non-empty string without braces or control characters"


def check_name(field: str, value: object) -> str:
    """Return *value* if it can name a test, model type or version, else raise :class:`InvalidValueError`.

    Names become parts of store keys: non-empty, no braces (Redis Cluster
    hash tags), no control characters.
    """
    if (not isinstance(value, str) or not value.strip() or "{" in value or "}" in value
            or any(ord(c) < 32 for c in value)):
        raise InvalidValueError(field, _NAME_EXPECTED, value)
    return value


def name() -> Validator:
    """A name usable in store keys (see :func:`check_name`)."""

    def validate(_: object, attribute: Any, value: object) -> None:
        check_name(attribute.name, value)

    return validate


#: Largest accepted latency in ms (about 31.7 years): squares of up to 1e280 such values sum finitely.
MAX_LATENCY_MS = 1e12


def check_result(
    inference_time_ms: object, confidence: object, error: object
) -> tuple[float | None, float | None, bool | None, tuple[str, ...]]:
    """Validate one result for a hot path: never raises.

    Returns ``(latency, confidence, error, rejected)``: a value that is
    missing (``None``) or invalid comes back as ``None``; *rejected* names the
    fields that were present but invalid (the caller counts them). Latency
    must be finite and >= 0, confidence finite in ``[0, 1]``, error a bool
    (or 0/1).

    >>> check_result(12.5, 1.5, False)
    (12.5, None, False, ('confidence',))
    """
    rejected: list[str] = []
    latency: float | None = None
    if inference_time_ms is not None:
        latency = _real(inference_time_ms)
        # Bounded (#11) so that its square, summed over any realistic batch, stays finite: one
        # absurd value (1e200 ms) is rejected on its own instead of overflowing the batch's sums.
        if latency is None or not (0.0 <= latency <= MAX_LATENCY_MS):
            rejected.append("inference_time_ms")
            latency = None
    conf: float | None = None
    if confidence is not None:
        conf = _real(confidence)
        if conf is None or not (0.0 <= conf <= 1.0):
            rejected.append("confidence")
            conf = None
    err: bool | None = None
    if error is True or error is False:
        err = error
    else:
        try:
            if type(error) is not float and error in (0, 1):  # ints and numpy bools
                err = bool(error)
        except Exception:  # e.g. an array: ambiguous truth value
            err = None
        if err is None:
            rejected.append("error")
    return latency, conf, err, tuple(rejected)


def check_result_reporting(
    inference_time_ms: object, confidence: object, error: object, rejected: Callable[[str, object], None]
) -> tuple[float | None, float | None, bool] | None:
    """:func:`check_result` for a hot path that counts what it rejects: never raises.

    The common result (float latency and confidence in range, a bool *error*) is
    answered by one test; anything else goes through :func:`check_result`, and
    each field present but invalid is reported as ``rejected(field, value)``.
    Returns ``(latency, confidence, error)`` with the invalid values ``None``, or
    ``None`` when *error* itself is invalid (the result cannot be counted).

    >>> check_result_reporting(12.5, 0.9, False, print)
    (12.5, 0.9, False)
    >>> check_result_reporting(12.5, 1.5, False, print)
    confidence 1.5
    (12.5, None, False)
    """
    if (type(inference_time_ms) is float and type(confidence) is float and (error is False or error is True)
            and 0.0 <= inference_time_ms <= MAX_LATENCY_MS and 0.0 <= confidence <= 1.0):
        return inference_time_ms, confidence, error
    latency, conf, err, bad = check_result(inference_time_ms, confidence, error)
    if bad:
        given = {"inference_time_ms": inference_time_ms, "confidence": confidence, "error": error}
        for field in bad:
            rejected(field, given[field])
    return None if err is None else (latency, conf, err)

"""Input validation shared by the registry and the A/B manager."""

from __future__ import annotations

import numbers

__all__ = ["InvalidValueError", "check_name", "check_result"]


class InvalidValueError(ValueError):
    """An argument is invalid; names the field, the expectation and the value."""

    def __init__(self, field: str, expected: str, value: object) -> None:
        self.field = field
        self.expected = expected
        self.value = value
        super().__init__(f"{field} must be {expected}, got {value!r}")


def check_name(field: str, value: object) -> str:
    """Return *value* if it can name a test, model type or version, else raise :class:`InvalidValueError`.

    Names become parts of store keys: non-empty, no braces (Redis Cluster
    hash tags), no control characters.
    """
    if (not isinstance(value, str) or not value.strip() or "{" in value or "}" in value
            or any(ord(c) < 32 for c in value)):
        raise InvalidValueError(field, "a non-empty string without braces or control characters", value)
    return value


#: Largest accepted latency (about 31.7 years): squares of up to 1e280 such values sum finitely.
MAX_LATENCY_MS = 1e12


def _real(value: object) -> float | None:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)  # type: ignore[arg-type]  # the exact type was just checked
    if kind is bool or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_result(
    inference_time_ms: object, confidence: object, error: object
) -> tuple[float | None, float | None, bool | None, tuple[str, ...]]:
    """Validate one result for a hot path: never raises.

    Returns ``(latency, confidence, error, rejected)``: a value that is
    missing (``None``) or invalid comes back as ``None``; *rejected* names the
    fields that were present but invalid (the caller counts them). Latency
    must be finite and >= 0, confidence finite in ``[0, 1]``, error a bool
    (or 0/1).
    """
    rejected: list[str] = []
    latency: float | None = None
    if inference_time_ms is not None:
        latency = _real(inference_time_ms)
        # Bounded so that its square, summed over any realistic batch, stays finite: one absurd
        # value (1e200 ms) is rejected on its own instead of overflowing the batch's sums.
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

"""Hot-path input checks and JSON encoding shared by every store.

Both stores accept and reject exactly the same values, so code tested against
:class:`~mlops_otel.stores.MemoryStore` behaves the same on Redis.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..validation import InvalidValueError
from ._protocol import JSONValue

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = [
    "check_expected_version",
    "check_max_len",
    "clean_deltas",
    "decode_item",
    "encode_document",
    "encode_items",
]

_COMPACT = (",", ":")


def check_max_len(max_len: object) -> int:
    """Return *max_len* if it is a window bound (an int >= 1), else raise :class:`ValueError`."""
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise InvalidValueError("max_len", "an int >= 1", max_len)
    return max_len


def check_expected_version(expected_version: object) -> int:
    """Return *expected_version* if it is a document version (an int >= 0), else raise."""
    if not isinstance(expected_version, int) or isinstance(expected_version, bool) or expected_version < 0:
        raise InvalidValueError("expected_version", "an int >= 0", expected_version)
    return expected_version


def encode_document(value: JSONValue) -> str:
    """Encode a document as compact JSON; raise :class:`ValueError`/:class:`TypeError` when it is not JSON."""
    return json.dumps(value, allow_nan=False, separators=_COMPACT)


_MAX_FLOAT = sys.float_info.max


def _as_float(delta: object) -> float:
    """*delta* as a finite float, or NaN when it is not a finite real number."""
    kind = type(delta)
    if kind is float or kind is int or (isinstance(delta, numbers.Real) and kind is not bool):
        try:
            value = float(delta)  # type: ignore[arg-type]  # a numbers.Real is float()-able
        except (OverflowError, TypeError, ValueError):
            return math.nan
        if math.isfinite(value):
            return value
    return math.nan


def clean_deltas(deltas: Mapping[str, float], telemetry: Telemetry) -> list[tuple[str, float]] | None:
    """Return the ``(field, delta)`` pairs of one increment, or ``None`` to skip it.

    Every field must be a string and every delta a finite real number. One bad
    field rejects the whole increment, so the sufficient statistics written
    together (count, sum, sum of squares) never disagree; each bad field is
    counted in ``mlops_invalid_measurements_total{metric=<field>}``.
    """
    try:
        items = list(deltas.items())
    except Exception:
        telemetry.invalid("store.incr", deltas)
        return None
    # Fast path (the cores always pass finite floats): the chained comparison rejects NaN and ±inf.
    for name, delta in items:
        if type(delta) is not float or type(name) is not str or not -_MAX_FLOAT <= delta <= _MAX_FLOAT:
            break
    else:
        return items
    pairs: list[tuple[str, float]] = []
    ok = True
    for name, delta in items:
        value = _as_float(delta)
        if value != value or not isinstance(name, str):  # NaN: not a finite real number
            telemetry.invalid(str(name), delta)
            ok = False
            continue
        pairs.append((name, value))
    return pairs if ok else None


def _encode_item(item: object) -> str | None:
    kind = type(item)
    if kind is float:
        return repr(item) if math.isfinite(item) else None  # type: ignore[arg-type]  # checked: a float
    if kind is int or kind is str or kind is bool or item is None:
        return json.dumps(item)
    if isinstance(item, numbers.Integral) and kind is not bool:
        return str(int(item))
    if isinstance(item, numbers.Real):
        value = float(item)
        return repr(value) if math.isfinite(value) else None
    try:
        return json.dumps(item, allow_nan=False, separators=_COMPACT)
    except (TypeError, ValueError, RecursionError):
        return None


def encode_items(key: str, items: Sequence[JSONValue], telemetry: Telemetry) -> list[str] | None:
    """Encode window items as JSON strings, or return ``None`` to skip the whole append.

    Floats, ints and numpy scalars take a fast path. An item that is not JSON
    (NaN, infinity, arbitrary objects) is counted in
    ``mlops_invalid_measurements_total{metric=<key>}`` and rejects the append.
    """
    if isinstance(items, (str, bytes)):
        telemetry.invalid(key, items)
        return None
    encoded: list[str] = []
    try:
        for item in items:
            text = _encode_item(item)
            if text is None:
                telemetry.invalid(key, item)
                return None
            encoded.append(text)
    except Exception:
        telemetry.invalid(key, items)
        return None
    return encoded


def decode_item(text: str) -> JSONValue:
    """Decode one window item written by :func:`encode_items`."""
    value: JSONValue = json.loads(text)
    return value

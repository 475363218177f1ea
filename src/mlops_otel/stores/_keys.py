"""Redis key naming: deployment prefixes, Cluster hash tags and slots, SCAN patterns.

Pure string functions (no redis-py), so the naming rules are testable alone.
"""

from __future__ import annotations

import binascii
import itertools

from ..validation import InvalidValueError

__all__ = [
    "SLOTS",
    "check_prefix",
    "glob_escape",
    "hash_tag",
    "key_slot",
    "slot_tag",
]

#: Number of Redis Cluster hash slots.
SLOTS = 16384

#: Characters a deployment prefix may not contain: braces would start a hash tag
#: that overrides the callers' own tags, ``#`` separates our internal keys.
_PREFIX_FORBIDDEN = frozenset("{}#")
_GLOB_SPECIAL = frozenset("*?[]\\")


def check_prefix(prefix: str) -> str:
    """Return *prefix* if it can prefix store keys, else raise :class:`ValueError`."""
    if not isinstance(prefix, str) or not prefix or _PREFIX_FORBIDDEN.intersection(prefix):
        raise InvalidValueError("prefix", "a non-empty string without '{', '}' or '#'", prefix)
    return prefix


def hash_tag(key: str) -> str | None:
    """Return the Cluster hash tag of *key* (the first non-empty ``{...}``), or ``None``.

    Follows the Redis rule exactly: the tag is the text between the first ``{``
    and the first ``}`` after it, and only counts when it is not empty.

    >>> hash_tag("mlops:ab:{gnn_test}:stats")
    'gnn_test'
    >>> hash_tag("a{}b{c}") is None
    True
    """
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def key_slot(key: str) -> int:
    """Return the Redis Cluster slot of *key* (CRC16/XMODEM of its tag or of the whole key)."""
    tag = hash_tag(key)
    data = (key if tag is None else tag).encode("utf-8")
    return binascii.crc_hqx(data, 0) % SLOTS


def slot_tag(slot: int) -> str:
    """Return a short brace-free string whose hash slot is *slot*.

    Used to build an internal key on the same slot as a key that has no hash tag.
    A search over decimal strings: about 16k CRC computations (a few ms).
    """
    if not 0 <= slot < SLOTS:
        raise InvalidValueError("slot", f"between 0 and {SLOTS - 1}", slot)
    for i in itertools.count():
        candidate = str(i)
        if binascii.crc_hqx(candidate.encode("ascii"), 0) % SLOTS == slot:
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover - itertools.count never ends


def glob_escape(text: str) -> str:
    """Escape *text* so a Redis ``SCAN MATCH`` pattern matches it literally."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)

"""Deterministic variant assignment (pure: no store, no clock, no randomness).

Algorithm (reproducible in any language or SQL warehouse)::

    digest = SHA-256(UTF-8(salt) + b"." + UTF-8(user_id))
    h      = digest[0:8] read as a big-endian unsigned 64-bit integer
    bucket = floor(h * 1_000_000 / 2**64)            # 0 <= bucket < 1_000_000
    variant = "treatment" if bucket < treatment_buckets else "control"

with ``treatment_buckets = round(treatment_traffic_pct * 10_000)``, so traffic
is set in steps of 0.0001 %. The treatment owns the bucket range ``[0,
treatment_buckets)`` and the control the rest, like GrowthBook's bucket
ranges: raising the traffic only widens the treatment range, so nobody already
in treatment ever moves out.

Why SHA-256 rather than Python's ``hash()`` (salted per process) or a faster
non-cryptographic hash: it is in every standard library, browser and
warehouse (``SHA256()`` in BigQuery, ``SHA2()`` in Snowflake, ``sha256()`` in
PostgreSQL), so analysts can recompute who saw what, and it needs no extra
dependency. In CPython its cost is mostly call overhead; the per-call path
compares the raw digest with a precomputed 32-byte bound (``digest <
threshold`` is exactly ``bucket < treatment_buckets``), which avoids integer
conversion. See ``benchmarks/bench_ab.py`` for the measured costs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from hashlib import sha256

import numpy as np
import numpy.typing as npt

from ._config import BUCKETS, ABTestConfig

__all__ = ["Variant", "assign", "assign_many", "bucket", "buckets_many"]


class Variant(enum.StrEnum):
    """The two arms of a test (a ``str``: ``Variant.CONTROL == "control"``)."""

    CONTROL = "control"
    TREATMENT = "treatment"


_CONTROL = Variant.CONTROL
_TREATMENT = Variant.TREATMENT
_SHIFT = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)
_B = np.uint64(BUCKETS)


def bucket(user_id: str, salt: str) -> int:
    """Return the bucket (``0 <= b < 1_000_000``) of *user_id* under *salt*."""
    data = (salt + ".").encode("utf-8") + str(user_id).encode("utf-8")
    return (int.from_bytes(sha256(data).digest()[:8], "big") * BUCKETS) >> 64


def assign(user_id: str, config: ABTestConfig) -> Variant:
    """Return the variant of *user_id* in the test *config* (same answer everywhere, always).

    Non-string ids are converted with ``str()`` first. Callers decide what to
    do with requests that have no user id (see ``ABTestManager.assign_variant``).
    """
    if type(user_id) is not str:
        user_id = str(user_id)
    if sha256(config.salt_prefix + user_id.encode()).digest() < config.treatment_threshold:
        return _TREATMENT
    return _CONTROL


def _words(user_ids: Iterable[str], salt: str) -> npt.NDArray[np.uint64]:
    prefix = (salt + ".").encode("utf-8")
    ids = user_ids.tolist() if isinstance(user_ids, np.ndarray) else user_ids
    # One 32-byte digest per id, joined, viewed as 4 big-endian uint64 words: keep the first.
    joined = b"".join([sha256(prefix + (u if type(u) is str else str(u)).encode()).digest() for u in ids])
    return np.frombuffer(joined, dtype=">u8").reshape(-1, 4)[:, 0].astype(np.uint64)


def buckets_many(user_ids: Iterable[str], salt: str) -> npt.NDArray[np.uint32]:
    """Return the bucket of every id in *user_ids* under *salt* (vectorised, exact)."""
    h = _words(user_ids, salt)
    # floor(h * B / 2**64) without 128-bit integers: split h into 32-bit halves (B < 2**20).
    x = (h >> _SHIFT) * _B + (((h & _LOW) * _B) >> _SHIFT)
    return (x >> _SHIFT).astype(np.uint32)


def assign_many(user_ids: Iterable[str], config: ABTestConfig) -> npt.NDArray[np.str_]:
    """Return the variant of every id, as an array of ``"control"`` / ``"treatment"``."""
    bound = np.uint64(int.from_bytes(config.treatment_threshold[:8], "big"))
    in_treatment = _words(user_ids, config.salt) < bound
    return np.where(in_treatment, Variant.TREATMENT.value, Variant.CONTROL.value)

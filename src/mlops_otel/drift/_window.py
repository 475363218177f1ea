"""This process's production window: a preallocated ring buffer, write-behind bookkeeping, no I/O.

:class:`LocalWindow` is what the hot path touches: one lock, three float
arrays of *size* slots, and the counters that say when the pending samples
are due at the store and when a local check is due. It does no I/O and knows
nothing of the statistics, so it is tested on its own.
"""

from __future__ import annotations

import array
import threading
from collections.abc import Mapping

import attrs
import numpy as np

from ._stats import FloatArray

__all__ = ["ANOMALY_SCORE", "CONFIDENCE", "DUE_CHECK", "DUE_PUSH", "OUTPUTS", "LocalWindow", "Pending",
           "WindowSnapshot"]

#: The monitored outputs, in report order.
ANOMALY_SCORE = "anomaly_score"
CONFIDENCE = "confidence"
OUTPUTS = (ANOMALY_SCORE, CONFIDENCE)

#: While samples arrive, pending ones reach the store at least this often (seconds).
PUSH_INTERVAL = 1.0

#: What :meth:`LocalWindow.add` says is due after a sample.
DUE_NOTHING, DUE_PUSH, DUE_CHECK = 0, 1, 2


@attrs.frozen
class WindowSnapshot:
    """A production window as arrays (oldest sample first), with its time span and report counts."""

    values: Mapping[str, FloatArray]
    start: float | None
    end: float | None
    total_samples: int
    invalid_samples: int
    features: Mapping[str, list[float | str]] = attrs.field(factory=dict)
    embeddings: FloatArray | None = None

    @property
    def size(self) -> int:
        return min(int(v.shape[0]) for v in self.values.values())


@attrs.frozen
class Pending:
    """Samples and counts taken from the local buffer for one delivery to the store."""

    scores: FloatArray
    confidences: FloatArray
    first: float
    last: float
    accepted: int
    invalid: int
    candidates: list[tuple[float, float]]


# on_setattr=NO_OP: the hot path assigns a handful of counters per sample; attrs' default
# validate-on-setattr hook would make each assignment a Python-level call.
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class LocalWindow:
    """The newest *size* samples this process accepted, and what is not yet at the store.

    *check_every*: a local check is due every that many samples (``None``: never
    from the hot path). *push_every*: pending samples are due at the store after
    that many, or after :data:`PUSH_INTERVAL` seconds; ``push_on_path=False``
    (a background thread delivers) never reports a push as due.
    *reference_size*: the first that many samples are kept as candidates for the
    default reference until :meth:`stop_candidates`.
    """

    size: int
    check_every: int | None
    push_every: int
    push_on_path: bool
    reference_size: int
    lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    # The ring: array.array for the per-sample writes (a third cheaper than numpy item assignment),
    # with numpy views over the same memory for everything vectorised.
    scores: array.array[float] = attrs.field(init=False, repr=False)
    confs: array.array[float] = attrs.field(init=False, repr=False)
    times: array.array[float] = attrs.field(init=False, repr=False)
    _scores: FloatArray = attrs.field(init=False, repr=False)
    _confs: FloatArray = attrs.field(init=False, repr=False)
    _times: FloatArray = attrs.field(init=False, repr=False)
    pos: int = attrs.field(default=0, init=False)
    filled: int = attrs.field(default=0, init=False)
    accepted: int = attrs.field(default=0, init=False)
    invalid: int = attrs.field(default=0, init=False)
    unpushed: int = attrs.field(default=0, init=False)
    unpushed_accepted: int = attrs.field(default=0, init=False)
    unpushed_invalid: int = attrs.field(default=0, init=False)
    last_push: float = attrs.field(default=0.0, init=False)
    since_check: int = attrs.field(default=0, init=False)
    candidates: list[tuple[float, float]] | None = attrs.field(factory=list, init=False, repr=False)
    candidates_sent: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.scores, self.confs, self.times = (array.array("d", bytes(8 * self.size)) for _ in range(3))
        self._scores, self._confs, self._times = (np.frombuffer(a, dtype=np.float64)
                                                  for a in (self.scores, self.confs, self.times))

    def reset(self, *, keep_candidates: bool) -> None:
        """Start empty (a forked child: the parent's samples and pending writes are the parent's)."""
        self.lock = threading.Lock()
        self.pos = self.filled = self.accepted = self.invalid = self.since_check = 0
        self.unpushed = self.unpushed_accepted = self.unpushed_invalid = 0
        self.candidates = [] if keep_candidates else None
        self.candidates_sent = 0

    # -------------------------------------------------------------- hot path
    def add(self, score: float, conf: float, now: float) -> int:
        """Record one valid sample; return :data:`DUE_CHECK`, :data:`DUE_PUSH` or :data:`DUE_NOTHING`."""
        with self.lock:
            i = self.pos
            self.scores[i] = score
            self.confs[i] = conf
            self.times[i] = now
            self.pos = i + 1 if i + 1 < self.size else 0
            if self.filled < self.size:
                self.filled += 1
            self.accepted += 1
            self.unpushed_accepted += 1
            if self.unpushed < self.size:
                self.unpushed += 1
            self.since_check += 1
            candidates = self.candidates
            if candidates is not None and len(candidates) < self.reference_size:
                candidates.append((score, conf))
            return self._due(now)

    def _due(self, now: float) -> int:
        if self.check_every is not None and self.since_check >= self.check_every:
            return DUE_CHECK
        if self.push_on_path and (self.unpushed >= self.push_every or now - self.last_push >= PUSH_INTERVAL):
            return DUE_PUSH
        return DUE_NOTHING

    def add_invalid(self, count: int) -> None:
        with self.lock:
            self.invalid += count
            self.unpushed_invalid += count

    def add_batch(self, scores: FloatArray, confs: FloatArray, now: float) -> int:
        """Record valid samples (equal lengths) with one timestamp; what is due, as :meth:`add`."""
        k = int(scores.shape[0])
        size = self.size
        with self.lock:
            if k:
                tail = min(k, size)
                idx = (self.pos + np.arange(tail)) % size
                self._scores[idx] = scores[-tail:]
                self._confs[idx] = confs[-tail:]
                self._times[idx] = now
                self.pos = (self.pos + tail) % size
                self.filled = min(size, self.filled + tail)
                self.accepted += k
                self.unpushed_accepted += k
                self.unpushed = min(size, self.unpushed + k)
                self.since_check += k
                candidates = self.candidates
                room = 0 if candidates is None else self.reference_size - len(candidates)
                if candidates is not None and room > 0:
                    candidates.extend(zip(scores[:room].tolist(), confs[:room].tolist(), strict=True))
            return self._due(now)

    # ------------------------------------------------------------ snapshots
    def mark_checked(self) -> None:
        with self.lock:
            self.since_check = 0

    def stop_candidates(self) -> None:
        """A reference exists: stop keeping candidates for the default one."""
        with self.lock:
            self.candidates = None

    def snapshot(self) -> WindowSnapshot:
        """The window in arrival order (oldest first), copied under the lock."""
        with self.lock:
            n = self.filled
            order = (self.pos - n + np.arange(n)) % self.size
            values = {ANOMALY_SCORE: self._scores[order], CONFIDENCE: self._confs[order]}
            times = self._times[:n]
            start, end = (float(times.min()), float(times.max())) if n else (None, None)
            return WindowSnapshot(values, start, end, self.accepted, self.invalid)

    def take_pending(self, now: float, *, with_candidates: bool) -> Pending:
        """Take the samples, counts and candidates not yet delivered (they count as delivered after)."""
        with self.lock:
            k = self.unpushed
            idx = (self.pos - k + np.arange(k)) % self.size
            times = self._times[idx]
            pending = Pending(self._scores[idx], self._confs[idx], float(times.min()) if k else 0.0,
                              float(times.max()) if k else 0.0, self.unpushed_accepted, self.unpushed_invalid, [])
            self.unpushed = self.unpushed_accepted = self.unpushed_invalid = 0
            self.last_push = now
            if self.candidates is not None and with_candidates:
                pending.candidates.extend(self.candidates[self.candidates_sent:])
                self.candidates_sent = len(self.candidates)
        return pending

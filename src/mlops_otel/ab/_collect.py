"""Results of A/B tests: summed in process, published as watermarked snapshots, read as a consistent cut.

Every worker (process) sums the results it records per test and variant in
memory (:meth:`Collector.add`, the hot path: no I/O). A background thread
publishes a *snapshot* of those sums with the time it was taken to the
worker's own document ``ab:{<test>}:worker:<id>`` (:meth:`Collector.publish`).
A snapshot is complete up to its time: every result this worker recorded
before it is inside, for both variants at once. The time of a worker's
newest snapshot (or of its last confirmation that the sums have not changed
since) is its **delivery watermark**; the document also carries a heartbeat
and the last few snapshots.

A decision reads every worker's document (:func:`read_cut`): the workers
whose heartbeat is recent are *live*; the cut time ``W`` is the lowest
watermark among them; each live worker contributes its newest snapshot taken
at or before ``W`` (so nothing it recorded after ``W``), each dead one (heartbeat older than the timeout) its last
snapshot. Results delivered after ``W`` are left out and counted as excluded,
so a decision never sees one worker's control results without its treatment
results, nor a worker that has delivered less than the others.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from operator import add
from typing import Any, cast

import attrs
import numpy as np

from ..stats import VECTOR_MIN
from ..stores import JSONValue, StateStore, make_key
from ._variant import LOG_LATENCY_FLOOR_MS, VariantStats

__all__ = ["Collector", "Cut", "read_cut", "worker_prefix"]

NAMESPACE = "ab"
_BASE = ("n", "errors", "latency_n", "latency_sum", "latency_sumsq", "log_latency_n", "log_latency_sum",
         "log_latency_sumsq", "confidence_n", "confidence_sum", "confidence_sumsq")
_CONF_SHIFT = 0.5
#: Snapshots kept per worker document (the cut needs one at or before the lowest watermark).
_KEEP = 8
#: Distinct tests summed in one process (a bound against callers passing many wrong names).
MAX_TESTS = 256
#: Distinct custom metric names and segment values kept per test.
MAX_METRICS = 32
MAX_SEGMENTS = 50
OTHER_SEGMENT = "other"


def worker_prefix(test: str) -> str:
    """Store-key prefix of the worker documents of *test*."""
    return make_key(NAMESPACE, test, "worker") + ":"


def result_values(latency: float | None, confidence: float | None, error: bool) -> tuple[float, ...]:
    """The built-in sums of one (validated) result, in ``_BASE`` order."""
    if latency is None:
        ln = ls = lq = gn = gs = gq = 0.0
    else:
        ln, ls, lq = 1.0, latency, latency * latency
        g = math.log(latency if latency > LOG_LATENCY_FLOOR_MS else LOG_LATENCY_FLOOR_MS)
        gn, gs, gq = 1.0, g, g * g
    if confidence is None:
        cn = cs = cq = 0.0
    else:
        cs = confidence - _CONF_SHIFT
        cn, cq = 1.0, cs * cs
    return (1.0, 1.0 if error else 0.0, ln, ls, lq, gn, gs, gq, cn, cs, cq)


def result_sums(latencies: Sequence[float], confidences: Sequence[float]) -> tuple[float, ...]:
    """The :func:`result_values` of successful results with both values, summed (values already validated)."""
    n = float(len(latencies))
    if n >= VECTOR_MIN:  # numpy's pairwise sums (see stats.VECTOR_MIN)
        la = np.asarray(latencies, dtype=np.float64)
        ga = np.log(np.maximum(la, LOG_LATENCY_FLOOR_MS))
        ca = np.asarray(confidences, dtype=np.float64) - _CONF_SHIFT
        return (n, 0.0, n, float(la.sum()), float((la * la).sum()), n, float(ga.sum()), float((ga * ga).sum()),
                n, float(ca.sum()), float((ca * ca).sum()))
    logs = [math.log(x if x > LOG_LATENCY_FLOOR_MS else LOG_LATENCY_FLOOR_MS) for x in latencies]
    cs = [x - _CONF_SHIFT for x in confidences]
    return (n, 0.0, n, math.fsum(latencies), math.fsum(x * x for x in latencies), n, math.fsum(logs),
            math.fsum(x * x for x in logs), n, math.fsum(cs), math.fsum(x * x for x in cs))


class _Arm:
    """Running sums of one variant (optionally of one segment of it)."""

    __slots__ = ("base", "custom", "owner")

    def __init__(self, owner: _TestSums) -> None:
        self.base = [0.0] * len(_BASE)
        self.custom: dict[str, list[float]] = {}
        self.owner = owner

    def add(self, values: tuple[float, ...], metrics: Iterable[tuple[str, float]]) -> None:
        self.base = list(map(add, self.base, values))
        for name, x in metrics:
            acc = self.custom.get(name)
            if acc is None:
                if len(self.custom) >= MAX_METRICS:
                    continue
                acc = self.custom[name] = [0.0, 0.0, 0.0]
            acc[0] += 1.0
            acc[1] += x
            acc[2] += x * x

    def counters(self, allowed: frozenset[str] | None) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = dict(zip(_BASE, self.base, strict=True))
        for name, (n, s, q) in self.custom.items():
            if allowed is None or name in allowed:
                out.update({f"m.{name}.n": n, f"m.{name}.sum": s, f"m.{name}.sumsq": q})
        return out


@attrs.define(eq=False)
class _TestSums:
    arms: dict[str, _Arm] = attrs.field(factory=dict)
    segments: dict[tuple[str, str], _Arm] = attrs.field(factory=dict)
    changed: bool = True


@attrs.frozen
class Cut:
    """The statistics a decision may use, and what it had to leave out."""

    control: VariantStats
    treatment: VariantStats
    excluded_control: int
    excluded_treatment: int
    #: The cut time (lowest watermark of the live workers), None when no worker has published.
    watermark: float | None
    live_workers: int
    workers: int
    segments: dict[str, tuple[VariantStats, VariantStats]]
    #: Everything delivered, cut or not (what :meth:`ABTestManager.results` returns).
    total_control: VariantStats
    total_treatment: VariantStats


@attrs.define(eq=False)
class Collector:
    """This process's sums per test (hot path) and its published snapshots (background)."""

    worker_id: str
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    # Held across taking a snapshot and writing it, so a slower publisher never overwrites a newer snapshot.
    _publish_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _tests: dict[str, _TestSums] = attrs.field(factory=dict, init=False, repr=False)
    #: The arms by (test, variant): the hot path's one lookup.
    _arms: dict[tuple[str, str], _Arm] = attrs.field(factory=dict, init=False, repr=False)
    _versions: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _docs: dict[str, list[dict[str, JSONValue]]] = attrs.field(factory=dict, init=False, repr=False)

    def add(self, test: str, variant: str, values: tuple[float, ...], metrics: Sequence[tuple[str, float]],
            segment: str | None) -> bool:
        """Add one result; returns False when the process already sums too many tests (nothing added)."""
        with self._lock:
            arm = self._arms.get((test, variant))
            if arm is None:
                sums = self._tests.get(test)
                if sums is None:
                    if len(self._tests) >= MAX_TESTS:
                        return False
                    sums = self._tests[test] = _TestSums()
                arm = sums.arms[variant] = self._arms[(test, variant)] = _Arm(sums)
            sums = arm.owner
            if metrics:
                arm.add(values, metrics)
            else:  # _Arm.add without custom metrics, inlined: the hot path's common case
                arm.base = list(map(add, arm.base, values))
            if segment is not None:
                key = (segment, variant)
                seg = sums.segments.get(key)
                if seg is None:
                    if len({s for s, _ in sums.segments}) >= MAX_SEGMENTS and not any(
                            s == segment for s, _ in sums.segments):
                        key = (OTHER_SEGMENT, variant)
                    seg = sums.segments.setdefault(key, _Arm(sums))
                seg.add(values, metrics)
            sums.changed = True
        return True

    def tests(self) -> list[str]:
        """The tests this process has summed results of."""
        with self._lock:
            return list(self._tests)

    def discard(self, test: str) -> int:
        """Forget *test* (it does not exist); returns how many results are dropped."""
        with self._lock:
            sums = self._tests.pop(test, None)
            self._arms = {k: a for k, a in self._arms.items() if k[0] != test}
        return 0 if sums is None else int(sum(a.base[0] for a in sums.arms.values()))

    def retire(self, test: str) -> None:
        """Stop publishing *test* (finished): its last snapshot stays, its heartbeat ages out."""
        with self._lock:
            self._tests.pop(test, None)
            self._arms = {k: a for k, a in self._arms.items() if k[0] != test}
        self._docs.pop(test, None)
        self._versions.pop(test, None)

    def track(self, test: str) -> None:
        """Publish (empty) snapshots of *test* from now on: this worker is one of its live workers."""
        with self._lock:
            self._tests.setdefault(test, _TestSums())

    def publish(self, store: StateStore, test: str, now_fn: Any, allowed: frozenset[str] | None, *,
                final: bool = False) -> None:
        """Write this worker's snapshot of *test* (taken now) to its document; raises StoreError.

        *final* marks the worker as stopped: decisions use its last snapshot and no longer wait for it.
        """
        with self._publish_lock:
            self._publish(store, test, now_fn, allowed, final)

    def _publish(self, store: StateStore, test: str, now_fn: Any, allowed: frozenset[str] | None,
                 final: bool) -> None:
        with self._lock:
            sums = self._tests.get(test)
            if sums is None:
                return
            now = float(now_fn())  # taken under the lock: every add() before it is in, none after
            arms = {v: a.counters(allowed) for v, a in sums.arms.items()}
            segments: dict[str, dict[str, JSONValue]] = {}
            for (seg, variant), a in sums.segments.items():
                segments.setdefault(seg, {})[variant] = a.counters(allowed)
            changed, sums.changed = sums.changed, False
        snaps = self._docs.get(test, [])
        if snaps and not changed:  # same sums confirmed later: the watermark moves on
            snaps = [*snaps[:-1], {**snaps[-1], "until": now}]
        else:
            snaps = [*snaps, {"t": now, "until": now, "arms": cast(JSONValue, arms)}][-_KEEP:]
        doc: dict[str, JSONValue] = {"worker": self.worker_id, "heartbeat": now, "closed": final,
                                     "checkpoints": cast(JSONValue, snaps), "segments": cast(JSONValue, segments)}
        key = worker_prefix(test) + self.worker_id
        version = self._versions.get(test)
        if version is None:
            found = store.get_document(key)
            version = 0 if found is None else found.version
        if not store.compare_and_set(key, doc, expected_version=version):
            found = store.get_document(key)  # e.g. the store lost its state: take over the document
            version = 0 if found is None else found.version
            if not store.compare_and_set(key, doc, expected_version=version):
                with self._lock:
                    if test in self._tests:
                        self._tests[test].changed = True
                return
        self._versions[test] = version + 1
        self._docs[test] = snaps


def _stats(arms: Any, variant: str) -> VariantStats:
    fields = arms.get(variant) if isinstance(arms, Mapping) else None
    return VariantStats.from_counters(fields) if isinstance(fields, Mapping) else VariantStats()


def read_cut(store: StateStore, test: str, now: float, timeout: float) -> Cut:
    """Read every worker's document of *test* and cut at the lowest watermark of the live ones."""
    prefix = worker_prefix(test)
    docs = []
    for key in store.list_keys(prefix):
        found = store.get_document(key)
        if found is None or not isinstance(found.value, Mapping):
            continue
        doc = cast(Mapping[str, Any], found.value)
        snaps = [s for s in doc.get("checkpoints") or () if isinstance(s, Mapping) and "t" in s]
        if snaps:
            heartbeat = -math.inf if doc.get("closed") else float(doc.get("heartbeat", 0.0))
            docs.append((heartbeat, snaps, doc.get("segments") or {}))
    live = [d for d in docs if now - d[0] <= timeout]
    watermark = min(float(d[1][-1].get("until", d[1][-1]["t"])) for d in live) if live else None
    zero = VariantStats()
    used = {"control": zero, "treatment": zero}
    total = {"control": zero, "treatment": zero}
    segments: dict[str, tuple[VariantStats, VariantStats]] = {}
    for heartbeat, snaps, segs in docs:
        chosen = snaps[-1]
        if watermark is not None and now - heartbeat <= timeout:
            before = [s for s in snaps if float(s["t"]) <= watermark]
            chosen = before[-1] if before else snaps[0]
        for variant in used:
            used[variant] = used[variant].merge(_stats(chosen.get("arms"), variant))
            total[variant] = total[variant].merge(_stats(snaps[-1].get("arms"), variant))
        if isinstance(segs, Mapping):
            for seg, arms in segs.items():
                c, t = segments.get(str(seg), (zero, zero))
                segments[str(seg)] = (c.merge(_stats(arms, "control")), t.merge(_stats(arms, "treatment")))
    c, t = used["control"], used["treatment"]
    return Cut(c, t, total["control"].n - c.n, total["treatment"].n - t.n, watermark, len(live), len(docs),
               segments, total["control"], total["treatment"])

"""The fleet's retired document: the counts of workers gone for good, folded into one (#16).

A worker recycled by its server (gunicorn's ``max_requests``, a deploy) leaves its fleet
document behind, and its counters must stay in the fleet's totals. Kept one document per dead
worker, they grow without bound: every refresh of every worker lists them, and every worker
holds each one's snapshot. :class:`Retired` is the value of the one document that replaces them:
the summed counters and histograms of every worker folded in, and which worker (at which
publish) was folded in, so that no reader counts a folded worker's own document again.

Pure values here; the store I/O (compare-and-set, delete) is :class:`~mlops_otel._fleet.FleetMetrics`'s.

>>> from mlops_otel import semconv
>>> from mlops_otel.telemetry import FamilySnapshot, SeriesSnapshot
>>> spec = semconv.STORE_DROPPED
>>> r = Retired.new("a1")
>>> r = r.absorb("w1", 100.0, [FamilySnapshot(spec, (SeriesSnapshot(("redis",), value=2.0),), 0, 1)])
>>> r = r.absorb("w2", 150.0, [FamilySnapshot(spec, (SeriesSnapshot(("redis",), value=3.0),), 0, 2)])
>>> [s.value for f in r.families for s in f.series], sorted(r.absorbed)
([5.0], ['w1', 'w2'])
>>> Retired.from_json(r.to_json()) == r
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from .semconv import MetricKind
from .telemetry import FamilySnapshot, merge_snapshots, snapshot_from_json, snapshot_to_json

__all__ = ["FORGET_AFTER_S", "Retired", "counts_only"]

#: How long (seconds) after its publish the record of a folded worker is kept once its own document
#: is gone. A worker that resumes later still finds out: its document is gone after a long silence.
FORGET_AFTER_S = 86_400.0


def counts_only(families: Sequence[FamilySnapshot]) -> list[FamilySnapshot]:
    """*families* without the gauges: what a stopped worker still counts in the fleet's totals."""
    return [f for f in families if f.spec.kind is not MetricKind.GAUGE]


@attrs.frozen
class Retired:
    """One incarnation of the retired document (a store that restarted empty starts a new one)."""

    #: Random id of this incarnation: readers keep what an older one counted when the store loses it.
    id: str
    #: Worker id -> ``published_at`` of the document that was folded in.
    absorbed: Mapping[str, float] = attrs.field(factory=dict)
    #: The folded workers' counters and histograms, summed (no gauges: a stopped worker exports none).
    families: tuple[FamilySnapshot, ...] = ()
    #: Raised by every write: of two copies of one incarnation the higher is the newer (the store's
    #: own version number goes back with a store restored from an older copy).
    generation: int = 0

    @classmethod
    def new(cls, incarnation: str) -> Retired:
        return cls(incarnation)

    @classmethod
    def from_json(cls, doc: object) -> Retired | None:
        """The value of a stored document; ``None`` when it is not one (written by something else)."""
        if not isinstance(doc, dict):
            return None
        incarnation, absorbed, families = doc.get("id"), doc.get("absorbed"), doc.get("families")
        generation = doc.get("generation")
        if (not isinstance(incarnation, str) or not isinstance(absorbed, dict) or not isinstance(families, dict)
                or type(generation) is not int):
            return None
        stamps = {str(k): float(v) for k, v in absorbed.items() if isinstance(v, (int, float))}
        return cls(incarnation, stamps, tuple(counts_only(snapshot_from_json(families))), generation)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "absorbed": dict(self.absorbed), "families": snapshot_to_json(self.families),
                "generation": self.generation}

    def successor(self) -> Retired:
        """This value as the next write stores it."""
        return attrs.evolve(self, generation=self.generation + 1)

    def absorb(self, worker: str, published_at: float, families: Sequence[FamilySnapshot]) -> Retired:
        """This document with *worker*'s document (published at *published_at*) folded in."""
        merged = merge_snapshots([self.families, counts_only(families)])
        return attrs.evolve(self, absorbed={**self.absorbed, worker: published_at}, families=tuple(merged))

    def forget(self, now: float, still_stored: Callable[[str], bool]) -> Retired:
        """Drop the records of folded workers whose document is gone, published over
        :data:`FORGET_AFTER_S` before *now*."""
        gone = {w for w, t in self.absorbed.items() if t < now - FORGET_AFTER_S and not still_stored(w)}
        if not gone:
            return self
        return attrs.evolve(self, absorbed={w: t for w, t in self.absorbed.items() if w not in gone})

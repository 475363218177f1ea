"""Serialise snapshots to JSON and merge the snapshots of many workers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .. import semconv
from ..semconv import MetricKind
from ._aggregate import BucketExemplar, FamilySnapshot, SeriesSnapshot

__all__ = ["merge_snapshots", "snapshot_from_json", "snapshot_to_json", "subtract_snapshots"]


def snapshot_to_json(families: Sequence[FamilySnapshot]) -> dict[str, Any]:
    """A JSON-safe document of *families* (numbers and strings only)."""
    out: dict[str, Any] = {}
    for f in families:
        rows: list[list[Any]] = []
        for s in f.series:
            if f.spec.kind is MetricKind.HISTOGRAM:
                row = [list(s.labels), s.sum, _finite(s.min), _finite(s.max), list(s.bucket_counts)]
                if s.exemplars:  # optional 6th column: [value, trace_id, span_id, time] or null per bucket
                    row.append([None if e is None else [e.value, e.trace_id_hex, e.span_id_hex, e.time_unix_nano]
                                for e in s.exemplars])
                rows.append(row)
            else:
                rows.append([list(s.labels), s.value])
        out[f.spec.name] = {"start": f.start_time_ns, "time": f.time_ns, "series": rows}
    return out


def _finite(x: float) -> float | None:
    return x if x not in (float("inf"), float("-inf")) else None


def snapshot_from_json(doc: Mapping[str, Any]) -> list[FamilySnapshot]:
    """Inverse of :func:`snapshot_to_json`; unknown metric names are skipped."""
    families = []
    for name, body in doc.items():
        try:
            spec = semconv.metric_by_name(name)
        except KeyError:
            continue
        series = []
        for row in body["series"]:
            labels = tuple(str(v) for v in row[0])
            if spec.kind is MetricKind.HISTOGRAM:
                lo = float("inf") if row[2] is None else float(row[2])
                hi = float("-inf") if row[3] is None else float(row[3])
                exemplars = tuple(
                    None if e is None else BucketExemplar(float(e[0]), int(e[1], 16), int(e[2], 16), int(e[3]))
                    for e in (row[5] if len(row) > 5 else ())
                )
                series.append(SeriesSnapshot(labels, bucket_counts=tuple(int(c) for c in row[4]),
                                             sum=float(row[1]), min=lo, max=hi, exemplars=exemplars))
            else:
                series.append(SeriesSnapshot(labels, value=float(row[1])))
        families.append(FamilySnapshot(spec, tuple(series), int(body["start"]), int(body["time"])))
    return families


def merge_snapshots(workers: Iterable[Sequence[FamilySnapshot]]) -> list[FamilySnapshot]:
    """Merge the snapshots of several workers into one view of the fleet.

    Counters and histograms add up; a gauge takes the value of the worker
    that reported it most recently.
    """
    merged: dict[str, dict[tuple[str, ...], tuple[int, SeriesSnapshot]]] = {}
    specs: dict[str, semconv.MetricSpec] = {}
    times: dict[str, tuple[int, int]] = {}
    for families in workers:
        for f in families:
            specs[f.spec.name] = f.spec
            start, now = times.get(f.spec.name, (f.start_time_ns, f.time_ns))
            times[f.spec.name] = (min(start, f.start_time_ns), max(now, f.time_ns))
            table = merged.setdefault(f.spec.name, {})
            for s in f.series:
                previous = table.get(s.labels)
                if previous is None:
                    table[s.labels] = (f.time_ns, s)
                elif f.spec.kind is MetricKind.GAUGE:
                    if f.time_ns >= previous[0]:
                        table[s.labels] = (f.time_ns, s)
                else:
                    table[s.labels] = (max(previous[0], f.time_ns), _add(previous[1], s))
    return [
        FamilySnapshot(specs[name], tuple(s for _, s in table.values()), *times[name])
        for name, table in merged.items()
    ]


def subtract_snapshots(current: Sequence[FamilySnapshot], base: Sequence[FamilySnapshot]) -> list[FamilySnapshot]:
    """What *current* counted since *base* (an earlier snapshot of the same process).

    Counters and histogram counts and sums are differences (never below zero); gauges, histogram
    minimum and maximum and exemplars are *current*'s. ``merge_snapshots([base, result])`` gives
    *current* back for every counter and histogram count (the fleet view of a worker that publishes
    only what it counted after its earlier counts were folded into another document).

    >>> from mlops_otel import semconv
    >>> from mlops_otel.telemetry import FamilySnapshot, SeriesSnapshot
    >>> spec = semconv.STORE_DROPPED
    >>> now = [FamilySnapshot(spec, (SeriesSnapshot(("redis",), value=7.0),), 0, 2)]
    >>> then = [FamilySnapshot(spec, (SeriesSnapshot(("redis",), value=5.0),), 0, 1)]
    >>> [s.value for s in subtract_snapshots(now, then)[0].series]
    [2.0]
    """
    before = {(f.spec.name, s.labels): s for f in base if f.spec.kind is not MetricKind.GAUGE for s in f.series}
    out = []
    for f in current:
        if f.spec.kind is MetricKind.GAUGE:
            out.append(f)
            continue
        series = []
        for s in f.series:
            old = before.get((f.spec.name, s.labels))
            if old is None:
                series.append(s)
            elif s.bucket_counts and len(old.bucket_counts) == len(s.bucket_counts):
                series.append(attrs.evolve(
                    s, bucket_counts=tuple(max(0, x - y) for x, y in zip(s.bucket_counts, old.bucket_counts,
                                                                        strict=True)),
                    sum=s.sum - old.sum))
            elif not s.bucket_counts:
                series.append(attrs.evolve(s, value=max(0.0, s.value - old.value)))
            else:  # a bucket layout that changed: nothing to subtract from
                series.append(s)
        out.append(attrs.evolve(f, series=tuple(series)))
    return out


def _add(a: SeriesSnapshot, b: SeriesSnapshot) -> SeriesSnapshot:
    if a.bucket_counts:
        return SeriesSnapshot(
            a.labels,
            bucket_counts=tuple(x + y for x, y in zip(a.bucket_counts, b.bucket_counts, strict=True)),
            sum=a.sum + b.sum, min=min(a.min, b.min), max=max(a.max, b.max),
            exemplars=_newer_exemplars(a.exemplars, b.exemplars),
        )
    return SeriesSnapshot(a.labels, value=a.value + b.value)


def _newer_exemplars(
    a: tuple[BucketExemplar | None, ...], b: tuple[BucketExemplar | None, ...]
) -> tuple[BucketExemplar | None, ...]:
    """Per bucket, the more recent of two workers' exemplars."""
    if not a or not b:
        return a or b
    return tuple(
        x if y is None or (x is not None and x.time_unix_nano >= y.time_unix_nano) else y
        for x, y in zip(a, b, strict=True)
    )

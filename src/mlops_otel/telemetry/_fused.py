"""``runtime.prediction()``'s telemetry writes, fused: pre-bound per (stage, model version), one lock round.

A prediction that observed its outputs records, at the end of its stage, the stage's
``diagnosis_duration_seconds{stage}``, the three ``gnn_*{model_version}`` histograms and, inside
an A/B test, ``mlops_ab_results_total{test,variant}``. Through the single calls
(:meth:`StageTracker.finish` with *gnn*, then the A/B manager's count) that is three lock rounds,
six frames and a family lookup per write; :class:`PredictionWrites` holds the families and label
tuples of one (stage, version), resolved once, and writes everything in one round.

Exactly what the single calls record: the same values (the same arithmetic), the same exemplars
(the current stage span), the same request model version and span attributes. Anything the fast
path does not cover (an OTel ``passthrough`` mode, a value the validating path would count as
invalid) goes through the single calls. The families are never replaced (``Aggregator.reset``
clears them in place, and the lock is read per write), and series are looked up per write, so
a fork reset, cardinality folding (and its overflow count) and closing the runtime need no
invalidation here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from .. import semconv
from ..stats import VECTOR_MIN
from ._telemetry import _MAX_FLOAT, _MS, _REQUEST, _STAGE_SPAN, _close_span, _Opened

if TYPE_CHECKING:
    from ._telemetry import Telemetry

__all__ = ["PredictionWrites"]

_ATTR_VERSION = semconv.SPAN_ATTR_MODEL_VERSION
_ATTR_SCORE = semconv.SPAN_ATTR_ANOMALY_SCORE
_ATTR_CONFIDENCE = semconv.SPAN_ATTR_CONFIDENCE


def _put(v: list[float], bounds: tuple[float, ...], value: float) -> None:
    """One observation of a histogram series' values (``Aggregator.observe`` without an exemplar)."""
    v[bisect_left(bounds, value) + 3] += 1
    v[0] += value
    if value < v[1]:
        v[1] = value
    if value > v[2]:
        v[2] = value


def _put_many(v: list[float], bounds: tuple[float, ...], values: Sequence[float], start: int) -> None:
    """:func:`_put` of ``values[start:]`` (from :data:`~mlops_otel.stats.VECTOR_MIN` values on, with numpy:
    the same bucket counts, minimum and maximum; the sum pairwise, so its last bits may differ)."""
    if len(values) - start >= VECTOR_MIN:
        a = np.asarray(values[start:] if start else values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(bounds, a, side="left"), minlength=len(bounds) + 1)
        for i in np.flatnonzero(counts).tolist():
            v[i + 3] += float(counts[i])
        v[0] += float(a.sum())
        lo, hi = float(a.min()), float(a.max())
        if lo < v[1]:
            v[1] = lo
        if hi > v[2]:
            v[2] = hi
        return
    total = v[0]
    lo, hi = v[1], v[2]
    for i in range(start, len(values)):
        value = values[i]
        v[bisect_left(bounds, value) + 3] += 1
        total += value
        if value < lo:
            lo = value
        if value > hi:
            hi = value
    v[0], v[1], v[2] = total, lo, hi


class PredictionWrites:
    """The telemetry writes at the end of an observed prediction of one (*stage*, *version*)."""

    __slots__ = ("_bound", "_bound_in", "_count", "_count_in", "_duration", "_gnn", "_results", "_stage_labels",
                 "_version_labels", "stage", "telemetry", "version")

    def __init__(self, telemetry: Telemetry, stage: str, version: str) -> None:
        self.telemetry = telemetry
        self.stage = stage
        self.version = version
        self._stage_labels = (stage,)
        self._version_labels = (version,)
        families = telemetry._agg.families
        self._duration = families[semconv.DIAGNOSIS_DURATION.name]
        self._gnn = telemetry._gnn_fams
        self._results = families[semconv.AB_RESULTS.name]
        # The four histogram series' values and bucket bounds, pre-bound (like prometheus_client's children)
        # once all four exist under their exact labels (never a folded "other" one: each write to that must
        # count its overflow), and the series dict they were found in: Aggregator.reset replaces it.
        self._bound: tuple[list[float], list[float], list[float], list[float]] | None = None
        self._bound_in: object = None
        # The last A/B result series counted ((test, variant), its values), bound the same way.
        self._count: tuple[tuple[str, str], list[float]] | None = None
        self._count_in: object = None

    def _bind(self) -> None:
        """Bind the four series when each exists under its exact labels; call with the lock held.

        (A folded label value's series is kept under ``"other"``, never under its own labels.)
        """
        stage = self._duration
        found = [stage.series.get(self._stage_labels)]
        found.extend(family.series.get(self._version_labels) for family in self._gnn)
        if all(s is not None for s in found):
            self._bound = tuple(s.values for s in found)  # type: ignore[assignment,union-attr]
            self._bound_in = stage.series
        else:
            self._bound = None

    def covers(self, latency_ms: float | None, score: float, conf: float) -> bool:
        """Whether :meth:`close` records these outputs itself (else the single calls must: an OTel
        ``passthrough`` mode, or a value the validating path would count as invalid)."""
        return (not self.telemetry._instruments and type(score) is float and type(conf) is float
                and 0.0 <= score <= 1.0 and 0.0 <= conf <= 1.0
                and (latency_ms is None or (type(latency_ms) is float and 0.0 <= latency_ms <= _MAX_FLOAT)))

    def _observe(self, elapsed: float, seconds: float, score: float, conf: float, span: object) -> None:
        """The four histogram writes through the aggregator's own path (which counts a folded label's
        overflow and keeps *span*'s exemplar); call with the lock held."""
        observe = self.telemetry._agg.observe
        duration, anomaly, confidence = self._gnn
        labels = self._version_labels
        observe(self._duration, self._stage_labels, elapsed, span)
        observe(duration, labels, seconds, span)
        observe(anomaly, labels, score, span)
        observe(confidence, labels, conf, span)

    def _write(self, elapsed: float, latency_ms: float | None, score: float, conf: float,
               ab_result: tuple[str, str] | None, span: object) -> None:
        """The aggregator writes of :meth:`close` (*span*: the exemplar's, or ``None``), in one lock round."""
        seconds = (elapsed * 1000.0 if latency_ms is None else latency_ms) * _MS  # record_gnn_metrics' arithmetic
        agg = self.telemetry._agg
        duration, anomaly, confidence = self._gnn
        stage = self._duration
        with agg.lock:
            bound = self._bound
            if bound is not None and span is None and stage.series is self._bound_in:
                _put(bound[0], stage.bounds, elapsed)
                _put(bound[1], duration.bounds, seconds)
                _put(bound[2], anomaly.bounds, score)
                _put(bound[3], confidence.bounds, conf)
            else:  # not bound yet, reset since, or an exemplar to keep: the aggregator's own writes
                self._observe(elapsed, seconds, score, conf, span)
                self._bind()
            if ab_result is not None:
                results = self._results
                count = self._count
                if count is not None and count[0] == ab_result and results.series is self._count_in:
                    count[1][0] += 1.0
                else:
                    agg.increment(results, ab_result, 1.0)
                    series = results.series.get(ab_result)  # None when folded into "other"
                    self._count = None if series is None else (ab_result, series.values)
                    self._count_in = results.series

    def record(self, elapsed: float, latency_ms: float | None, score: float, conf: float,
               ab_result: tuple[str, str] | None) -> None:
        """:meth:`close`'s metric writes alone, with no exemplar and nothing of the current context
        (neither span nor request): a prediction's writes deferred off its request path. Never raises."""
        try:
            self._write(elapsed, latency_ms, score, conf, ab_result, None)
        except Exception as fault:
            self.telemetry._agg.fault("record_gnn_metrics", fault)

    def record_many(self, elapsed: Sequence[float], latencies_ms: Sequence[float], scores: Sequence[float],
                    confs: Sequence[float], ab_counts: Sequence[tuple[tuple[str, str], int]]) -> None:
        """:meth:`record` of several predictions (every value :meth:`covers`; *latencies_ms* given), in one
        lock round; *ab_counts* are ``((test, variant), n)`` A/B result counts. Never raises."""
        try:
            agg = self.telemetry._agg
            duration, anomaly, confidence = self._gnn
            stage = self._duration
            # record_gnn_metrics' arithmetic (numpy's product of two doubles is the same double)
            seconds: Sequence[float] = (cast("Sequence[float]", np.asarray(latencies_ms, dtype=np.float64) * _MS)
                                        if len(latencies_ms) >= VECTOR_MIN else [x * _MS for x in latencies_ms])
            with agg.lock:
                bound = self._bound
                if bound is None or stage.series is not self._bound_in:  # not bound yet, or reset since
                    self._observe(elapsed[0], float(seconds[0]), scores[0], confs[0], None)
                    self._bind()
                    bound = self._bound
                    start = 1
                else:
                    start = 0
                if bound is not None:
                    _put_many(bound[0], stage.bounds, elapsed, start)
                    _put_many(bound[1], duration.bounds, seconds, start)
                    _put_many(bound[2], anomaly.bounds, scores, start)
                    _put_many(bound[3], confidence.bounds, confs, start)
                else:  # a folded label value: the aggregator's own writes (each counts its overflow)
                    for i in range(start, len(elapsed)):
                        self._observe(elapsed[i], float(seconds[i]), scores[i], confs[i], None)
                results = self._results
                for ab_result, n in ab_counts:
                    if results.series.get(ab_result) is not None:
                        agg.increment(results, ab_result, float(n))
                    else:  # new, or folded into "other" (where each write counts its overflow): one by one
                        for _ in range(n):
                            agg.increment(results, ab_result, 1.0)
        except Exception as fault:
            self.telemetry._agg.fault("record_gnn_metrics", fault)

    def defers(self, latency_ms: float | None, score: float, conf: float) -> bool:
        """Whether :meth:`record` may write these outputs later, on another thread (``prediction()``'s
        deferred exit): what :meth:`covers` accepts, for a *score* and *conf* whose type the caller has
        checked to be ``float`` (a *latency_ms* given must be a float in ``[0, MAX_LATENCY_MS]``, which the
        caller checks after this), while no recording stage span is current (then :meth:`record`, with no
        exemplar and no span attribute, writes exactly what :meth:`close` would)."""
        return (not self.telemetry._instruments and 0.0 <= score <= 1.0 and 0.0 <= conf <= 1.0
                and (latency_ms is None or type(latency_ms) is float) and _STAGE_SPAN.get() is None)

    def mark_request(self) -> None:
        """Label the current ``@track_diagnosis_request`` call with this version (what :meth:`close` does)."""
        state = _REQUEST.get()
        if state is not None:
            state.model_version = self.version

    def close(self, elapsed: float, opened: _Opened | None, exc_type: type[BaseException] | None,
              exc: BaseException | None, latency_ms: float | None, score: float, conf: float,
              ab_result: tuple[str, str] | None) -> None:
        """End a stage that took *elapsed* seconds (what :meth:`StageTracker.finish` does with *gnn*).

        For outputs :meth:`covers`: records the stage's duration and the gnn histograms (*latency_ms*
        ``None``: the stage's wall time) and, when *ab_result* ``(test, variant)`` is given, counts that
        A/B result, all in one lock round; then sets the request's model version and the span's
        attributes, counts the error and ends the span. Never raises.
        """
        tel = self.telemetry
        try:
            span = _STAGE_SPAN.get()  # the sampled span, if any, becomes the buckets' exemplar
            self._write(elapsed, latency_ms, score, conf, ab_result, span)
            self.mark_request()
            if span is not None:
                span.set_attributes({_ATTR_VERSION: self.version, _ATTR_SCORE: score, _ATTR_CONFIDENCE: conf})
        except Exception as fault:
            tel._agg.fault("record_gnn_metrics", fault)
        if exc_type is not None:
            tel.record_error(exc_type.__name__, self.stage)
        if opened is not None:
            try:
                _close_span(opened, exc)
            except Exception as fault:
                tel.fault("track_stage", fault)

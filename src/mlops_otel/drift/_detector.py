"""The drift detector of one model version: the owner that wires window, shared state and evaluation.

The parts, each testable alone: :mod:`._window` (this process's ring buffer),
:mod:`._shared` (the fleet's window and alert state in the store),
:mod:`._reference` (the shared reference's store I/O), :mod:`._evaluate`
(pure statistics and the decision), :mod:`._recommend` (the text) and
:mod:`._offpath` (the one thread that runs a local check's store I/O).
"""

from __future__ import annotations

import collections
import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .. import semconv
from .._forksafe import after_fork_in_child
from ..stores import StateStore, StoreError
from ..validation import InvalidValueError
from ._calibration import EXACT_MAX_PRODUCT
from ._evaluate import Evaluation, Rules, evaluate
from ._features import FeatureBuffer, reference_values
from ._offpath import OffPath
from ._recommend import previous_champion, recommend
from ._reference import Reference, SharedReference
from ._report import DriftLevel, DriftReport, OutputDrift
from ._shared import SharedWindow, detector_key, detector_keys
from ._stats import FloatArray, KSWorkspace
from ._window import (
    ANOMALY_SCORE,
    CONFIDENCE,
    DUE_CHECK,
    DUE_PUSH,
    OUTPUTS,
    PUSH_INTERVAL,
    LocalWindow,
    WindowSnapshot,
)

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = ["ANOMALY_SCORE", "CONFIDENCE", "OUTPUTS", "DriftDetector", "DriftLevel", "DriftReport", "OutputDrift"]

log = logging.getLogger("mlops_otel.drift")

#: A worker adds a local check to the shared score history at most this often (seconds) unless its level changes.
HISTORY_INTERVAL = 10.0

#: A local check confirms at least this often (seconds) that the store still holds the reference.
VERIFY_INTERVAL = 10.0

#: ``mlops_invalid_measurements_total{metric}`` labels of rejected samples.
INVALID_LABELS = {ANOMALY_SCORE: "drift.anomaly_score", CONFIDENCE: "drift.confidence"}


# ---------------------------------------------------------------- validation
def _check_name(field: str, value: object) -> str:
    if (not isinstance(value, str) or not value.strip() or "{" in value or "}" in value
            or any(ord(c) < 32 for c in value)):
        raise InvalidValueError(field, "a non-empty string without braces or control characters", value)
    return value


def _check_int(field: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidValueError(field, f"an int >= {minimum}", value)
    return value


def _check_fraction(field: str, value: object, *, open_low: bool = False, open_high: bool = False) -> float:
    """Return *value* as a float if it lies in [0, 1] (ends open on request), else raise."""
    v = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    ok = (v > 0.0 if open_low else v >= 0.0) and (v < 1.0 if open_high else v <= 1.0)
    if not ok:
        span = ("(0" if open_low else "[0") + ", " + ("1)" if open_high else "1]")
        raise InvalidValueError(field, f"a number in {span}", value)
    return v


def _as_float(value: object) -> float:
    """*value* as a float when it is a real number, else NaN (the range is checked by the caller)."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _time_of(item: Mapping[str, object]) -> float:
    value = item.get("time")
    return float(value) if isinstance(value, (int, float)) else 0.0


def _unit_array(field: str, values: object) -> FloatArray:
    """*values* as a float array of at least 2 numbers in [0, 1], else :class:`ValueError`."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field} must be a sequence of numbers in [0, 1], got {values!r:.60}") from exc
    if array.ndim != 1 or array.shape[0] < 2:
        raise ValueError(f"{field} must be a one-dimensional sequence of at least 2 numbers, "
                         f"got shape {array.shape}")
    bad = np.flatnonzero(~((array >= 0.0) & (array <= 1.0)))
    if bad.shape[0]:
        raise ValueError(f"{field} must hold numbers in [0, 1] only, got {float(array[bad[0]])!r} "
                         f"at index {int(bad[0])}")
    return array


# ------------------------------------------------------------------ detector
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class DriftDetector:
    """Detects drift of one model version's outputs (anomaly score and confidence).

    :meth:`add_production_sample` is the hot path: it validates the sample,
    writes it into a preallocated local ring buffer of *window_size* slots
    and returns; it never raises. Every *check_every* samples the calling
    thread delivers the pending samples to the *store* in one batch (buffered
    again, write-behind, by ``RedisStore``) and runs a local check of this
    process's window that updates ``model_drift_score`` and
    ``model_drift_alert``; ``check_every=None`` leaves the statistics to
    :meth:`get_drift_report` and :meth:`DriftMonitor.refresh`.
    :meth:`get_drift_report` evaluates the store's windows, which every worker
    shares, so all workers report the same score for the same data.

    The drift score is the largest two-sample KS statistic over the monitored
    outputs against the reference (0..1). The alert turns on once the window
    holds *min_samples* samples and an output's score reaches *threshold*
    with a KS p-value below *alert_alpha* (Bonferroni over the outputs) at
    the effective sample sizes (serial dependence discounted, exact p-values
    when small); it turns off below *clear_threshold* (hysteresis). A
    significant shift (p below *alpha*) of at least *warning_threshold*
    without an alert is a warning, and so is a flagged input feature
    (*features*: Holm over the features at *feature_alpha* per check, score at
    least *feature_effect*) or drifted embeddings. Performance
    drift is a fall of mean confidence of at least *confidence_drop* whose
    *interval_level* Welch interval excludes zero.

    The reference is the one given to :meth:`set_reference` or, by default,
    the first *reference_size* production samples the store received,
    frozen by compare-and-set so every worker uses the same one. *registry*
    names the previous champion in recommendations: an object with
    ``get_champion(model_type)`` and ``history(model_type)`` (the
    :class:`~mlops_otel.registry.ModelRegistry` API) or a callable
    ``(model_type, version) -> str | None``.
    """

    model_type: str = attrs.field(validator=lambda _, a, v: _check_name(a.name, v))
    version: str = attrs.field(validator=lambda _, a, v: _check_name(a.name, v))
    store: StateStore = attrs.field(kw_only=True)
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True, repr=False)
    registry: object | None = attrs.field(default=None, kw_only=True, repr=False)
    window_size: int = attrs.field(default=1000, kw_only=True, validator=lambda _, a, v: _check_int(a.name, v, 2))
    reference_size: int | None = attrs.field(default=None, kw_only=True)
    threshold: float = attrs.field(default=0.3, kw_only=True)
    clear_threshold: float | None = attrs.field(default=None, kw_only=True)
    min_samples: int | None = attrs.field(default=None, kw_only=True)
    check_every: int | None = attrs.field(default=100, kw_only=True)
    alpha: float = attrs.field(default=0.01, kw_only=True)
    alert_alpha: float = attrs.field(default=1e-4, kw_only=True)
    warning_threshold: float = attrs.field(default=0.1, kw_only=True)
    confidence_drop: float = attrs.field(default=0.05, kw_only=True)
    interval_level: float = attrs.field(default=0.95, kw_only=True)
    psi_bins: int = attrs.field(default=10, kw_only=True, validator=lambda _, a, v: _check_int(a.name, v, 2))
    #: Input features monitored at most (values of further features are counted, not kept).
    max_features: int = attrs.field(default=50, kw_only=True, validator=lambda _, a, v: _check_int(a.name, v, 0))
    #: A feature is flagged when significant (Holm over the features) and its score reaches this.
    feature_effect: float = attrs.field(default=0.05, kw_only=True)
    #: The features' family-wise level per check (Holm over one check's features).
    feature_alpha: float = attrs.field(default=1e-3, kw_only=True)
    #: Embeddings kept per window (and in the reference), and their largest dimension.
    embedding_window: int = attrs.field(default=500, kw_only=True,
                                        validator=lambda _, a, v: _check_int(a.name, v, 4))
    max_dimensions: int = attrs.field(default=1024, kw_only=True, validator=lambda _, a, v: _check_int(a.name, v, 1))
    #: Permutations of the embeddings' MMD test (its p-value resolution is 1 / (permutations + 1)).
    permutations: int = attrs.field(default=100, kw_only=True, validator=lambda _, a, v: _check_int(a.name, v, 19))
    #: ``True`` when a background thread calls :meth:`run_periodic_check` (as
    #: :class:`DriftMonitor` does): samples are then delivered there, never on the hot path.
    background_checks: bool = attrs.field(default=False, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)

    _tel: Telemetry = attrs.field(init=False, repr=False)
    _rules: Rules = attrs.field(init=False, repr=False)
    _labels: tuple[str, str] = attrs.field(init=False, repr=False)
    _keys: dict[str, str] = attrs.field(init=False, repr=False)
    _window: LocalWindow = attrs.field(init=False, repr=False)
    _shared: SharedWindow = attrs.field(init=False, repr=False)
    _ref: SharedReference = attrs.field(init=False, repr=False)
    _io: OffPath = attrs.field(init=False, repr=False)
    _extra: FeatureBuffer = attrs.field(init=False, repr=False)
    _eval_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _push_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _alert: bool = attrs.field(default=False, init=False, repr=False)
    # The alert state this process last shared through the store (transitions are retried until equal).
    _shared_alert: bool = attrs.field(default=False, init=False, repr=False)
    _last_report: DriftReport | None = attrs.field(default=None, init=False, repr=False)
    _workspace: KSWorkspace = attrs.field(factory=KSWorkspace, init=False, repr=False)
    _verified_at: float = attrs.field(default=0.0, init=False, repr=False)
    _calibration: dict[str, object] = attrs.field(factory=dict, init=False, repr=False)
    _recorded_at: float = attrs.field(default=-math.inf, init=False, repr=False)
    _last_level: DriftLevel | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.threshold = _check_fraction("threshold", self.threshold, open_low=True)
        if self.clear_threshold is None:
            self.clear_threshold = max(0.0, self.threshold - 0.05)
        self.clear_threshold = _check_fraction("clear_threshold", self.clear_threshold)
        if self.clear_threshold > self.threshold:
            raise InvalidValueError("clear_threshold", f"<= threshold ({self.threshold!r})", self.clear_threshold)
        if self.reference_size is None:
            self.reference_size = self.window_size
        _check_int("reference_size", self.reference_size, 2)
        if self.min_samples is None:
            self.min_samples = max(2, self.window_size // 2)
        _check_int("min_samples", self.min_samples, 1)
        if self.min_samples > self.window_size:
            raise InvalidValueError("min_samples", f"<= window_size ({self.window_size})", self.min_samples)
        if self.check_every is not None:
            _check_int("check_every", self.check_every, 1)
        self.alpha = _check_fraction("alpha", self.alpha, open_low=True, open_high=True)
        self.alert_alpha = _check_fraction("alert_alpha", self.alert_alpha, open_low=True, open_high=True)
        self.warning_threshold = _check_fraction("warning_threshold", self.warning_threshold)
        self.confidence_drop = _check_fraction("confidence_drop", self.confidence_drop)
        self.interval_level = _check_fraction("interval_level", self.interval_level, open_low=True, open_high=True)
        self.feature_effect = _check_fraction("feature_effect", self.feature_effect)
        self.feature_alpha = _check_fraction("feature_alpha", self.feature_alpha, open_low=True, open_high=True)
        self._rules = Rules(self.threshold, self.clear_threshold, self.min_samples, self.alpha, self.alert_alpha,
                            self.warning_threshold, self.confidence_drop, self.interval_level, self.feature_effect,
                            self.permutations, self.feature_alpha)
        if self.telemetry is None:
            from ..telemetry import default_telemetry

            self._tel = default_telemetry()
        else:
            self._tel = self.telemetry
        self._labels = (self.model_type, self.version)
        self._keys = detector_keys(self.model_type, self.version)
        self._window = LocalWindow(self.window_size, self.check_every, min(self.check_every or 100, self.window_size),
                                   not self.background_checks, self.reference_size)
        self._window.last_push = self.clock()
        self._extra = FeatureBuffer(self.window_size, self.reference_size, self.max_features,
                                    min(self.embedding_window, self.window_size), self.max_dimensions)
        self._shared = SharedWindow(self.store, self._keys, self.window_size, self.reference_size, self.clock)
        self._ref = SharedReference(
            self.store, self._keys, self.reference_size, self.psi_bins, self.clock, on_adopt=self._stop_candidates,
            on_restore=self._restored,
            extra_candidates=lambda: (self._shared.read_features(candidates=True),
                                      self._shared.read_embeddings(candidates=True)))
        self._io = OffPath("mlops-otel-drift-io", self.store.kind == "memory",
                           lambda exc: self._tel.fault("drift.io", exc))
        self._verified_at = self.clock()
        self._calibration = {
            "method": "ks_distance_and_effective_size",
            "alert": f"KS >= {self.threshold} and p < {self.alert_alpha} / {len(OUTPUTS)} at effective sizes",
            "warning": f"KS >= {self.warning_threshold} and p < {self.alpha} / {len(OUTPUTS)} at effective sizes",
            "effective_size": "n (1 - phi) / (1 + phi), phi = lag-1 autocorrelation upper bound",
            "exact_pvalue_below": EXACT_MAX_PRODUCT,
            "features": f"Holm over features, alpha {self.feature_alpha}, effect >= {self.feature_effect}",
            "embeddings": f"MMD^2 permutation test, {self.permutations} permutations, alpha {self.alpha}",
        }
        add_listener = getattr(self.store, "add_state_loss_listener", None)
        if callable(add_listener):  # a store that reports losing its state: re-check the reference then
            add_listener(self._state_lost)  # a bound method: the store holds listeners weakly
        after_fork_in_child(self, DriftDetector._after_fork)

    def _after_fork(self) -> None:
        # A forked worker starts its own local window; the parent's pending samples are the parent's.
        self._eval_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._window.reset(keep_candidates=self._ref.current is None)
        self._extra.reset(keep_candidates=self._ref.current is None)
        self._ref.after_fork()
        self._io.after_fork()
        self._workspace = KSWorkspace()

    # ---------------------------------------------------------------- access
    @property
    def key(self) -> str:
        """``"<model_type>:<version>"``: the detector's key in :meth:`DriftMonitor.detectors`.

        ``%`` and ``:`` inside a name are percent-encoded, so (``gnn:edge``, ``v1``)
        and (``gnn``, ``edge:v1``) get different keys (``gnn%3Aedge:v1``, ``gnn:edge%3Av1``).
        """
        return detector_key(self.model_type, self.version)

    @property
    def last_report(self) -> DriftReport | None:
        """The newest evaluation (a local check or a shared report), ``None`` before the first."""
        return self._last_report

    @property
    def alert_active(self) -> bool:
        """Whether the drift alert is firing as of this process's newest evaluation."""
        return self._alert

    @property
    def local_samples(self) -> int:
        """Samples in this process's local window (at most *window_size*)."""
        self._tel.apply_pending()
        return self._window.filled

    @property
    def accepted_samples(self) -> int:
        """Valid samples this process has recorded since the detector was created."""
        self._tel.apply_pending()
        return self._window.accepted

    def store_keys(self) -> list[str]:
        """Every store key this detector may write (for inspection and clean-up)."""
        return sorted(self._keys.values())

    # -------------------------------------------------------------- hot path
    def add_production_sample(self, anomaly_score: float, confidence: float, *,
                              features: Mapping[str, float | str] | None = None,
                              embedding: Sequence[float] | FloatArray | None = None) -> None:
        """Record one prediction's outputs (and optionally its inputs): O(1), never raises.

        NaN, infinite, out-of-range or non-numeric values are counted in
        ``mlops_invalid_measurements_total{metric="drift.anomaly_score"}`` (or
        ``"drift.confidence"``) and the sample is skipped. Every *check_every*
        samples this call also delivers the pending samples to the store and
        runs a local check (tens of microseconds for a 1,000-sample window).

        *features* maps input feature names to numbers (numeric features) or
        strings (categorical ones); *embedding* is the model's embedding of
        the input (a vector of fixed dimension). Values of features beyond
        *max_features*, of the wrong kind, or not finite are counted in
        ``mlops_drift_feature_overflow_total`` and skipped.
        """
        try:
            score = anomaly_score if type(anomaly_score) is float else _as_float(anomaly_score)
            conf = confidence if type(confidence) is float else _as_float(confidence)
            if not (0.0 <= score <= 1.0 and 0.0 <= conf <= 1.0):
                self._reject(score, conf, anomaly_score, confidence)
                return
            # "Not both None" in one comparison on the common path (a mapping is never the embedding).
            if features is not embedding:  # type: ignore[comparison-overlap]
                dropped = self._extra.add(features, embedding)
                if dropped:
                    self._tel.add(semconv.DRIFT_FEATURE_OVERFLOW, self._labels, float(dropped))
            # LocalWindow.add, inlined: a method call is ~15% of this path.
            w = self._window
            now = self.clock()
            with w.lock:
                size = w.size
                i = w.pos
                w.scores[i] = score
                w.confs[i] = conf
                w.times[i] = now
                w.pos = i + 1 if i + 1 < size else 0
                if w.filled < size:
                    w.filled += 1
                w.accepted += 1
                w.unpushed_accepted += 1
                unpushed = w.unpushed
                if unpushed < size:
                    w.unpushed = unpushed = unpushed + 1
                w.since_check = since_check = w.since_check + 1
                candidates = w.candidates
                if candidates is not None and len(candidates) < w.reference_size:
                    candidates.append((score, conf))
                check_every = w.check_every
                due_check = check_every is not None and since_check >= check_every
                due_push = w.push_on_path and (unpushed >= w.push_every or now - w.last_push >= PUSH_INTERVAL)
            if due_check:
                self._periodic_check()
            elif due_push:
                self._push()
        except Exception as exc:  # a request must never fail because of drift detection
            self._tel.fault("drift.add_production_sample", exc)

    def _reject(self, score: float, conf: float, raw_score: object, raw_conf: object) -> None:
        if not 0.0 <= score <= 1.0:
            self._tel.invalid(INVALID_LABELS[ANOMALY_SCORE], raw_score)
        if not 0.0 <= conf <= 1.0:
            self._tel.invalid(INVALID_LABELS[CONFIDENCE], raw_conf)
        self._window.add_invalid(1)

    def add_production_samples(self, anomaly_scores: Sequence[float] | FloatArray,
                               confidences: Sequence[float] | FloatArray, *,
                               features: Mapping[str, Sequence[float | str]] | None = None,
                               embeddings: Sequence[Sequence[float]] | FloatArray | None = None) -> None:
        """Record a batch of predictions (equal-length sequences); never raises.

        Equivalent to adding the samples one by one, except that all get the
        same timestamp and the statistics run at most once, at the end of the
        batch. Invalid pairs are counted and skipped as in the per-sample call.
        *features* maps each feature name to one value per sample; *embeddings*
        has one row per sample.
        """
        try:
            self._add_batch(np.asarray(anomaly_scores, dtype=np.float64).reshape(-1),
                            np.asarray(confidences, dtype=np.float64).reshape(-1), features, embeddings)
        except Exception as exc:
            self._tel.fault("drift.add_production_samples", exc)

    def _add_inputs(self, keep: np.ndarray, features: Mapping[str, Sequence[float | str]] | None,
                    embeddings: Sequence[Sequence[float]] | FloatArray | None) -> None:
        rows = np.flatnonzero(keep).tolist()
        columns = {name: list(values) for name, values in (features or {}).items()}
        vectors = None if embeddings is None else list(embeddings)
        dropped = 0
        for i in rows:
            row = {name: values[i] for name, values in columns.items() if i < len(values)} if columns else None
            dropped += self._extra.add(row, None if vectors is None or i >= len(vectors) else vectors[i])
        if dropped:
            self._tel.add(semconv.DRIFT_FEATURE_OVERFLOW, self._labels, float(dropped))

    def _add_batch(self, scores: FloatArray, confs: FloatArray,
                   features: Mapping[str, Sequence[float | str]] | None = None,
                   embeddings: Sequence[Sequence[float]] | FloatArray | None = None) -> None:
        if scores.shape != confs.shape:
            n = min(scores.shape[0], confs.shape[0])
            extra = abs(scores.shape[0] - confs.shape[0])
            longer = ANOMALY_SCORE if scores.shape[0] > n else CONFIDENCE
            self._tel.add(semconv.INVALID_MEASUREMENTS, (INVALID_LABELS[longer],), float(extra))
            self._window.add_invalid(extra)
            scores, confs = scores[:n], confs[:n]
        ok_score = (scores >= 0.0) & (scores <= 1.0)
        ok_conf = (confs >= 0.0) & (confs <= 1.0)
        for name, ok_field in ((ANOMALY_SCORE, ok_score), (CONFIDENCE, ok_conf)):
            bad = int(ok_field.shape[0] - np.count_nonzero(ok_field))
            if bad:
                self._tel.add(semconv.INVALID_MEASUREMENTS, (INVALID_LABELS[name],), float(bad))
        ok = ok_score & ok_conf
        if features is not None or embeddings is not None:
            self._add_inputs(ok, features, embeddings)
        rejected = int(ok.shape[0] - np.count_nonzero(ok))
        if rejected:
            scores, confs = scores[ok], confs[ok]
            self._window.add_invalid(rejected)
        due = self._window.add_batch(scores, confs, self.clock())
        if due == DUE_CHECK:
            self._periodic_check()
        elif due == DUE_PUSH:
            self._push()

    # ---------------------------------------------------------- write-behind
    def _push(self) -> None:
        """Give this process's pending samples and counts to the store (which may buffer them).

        Serialised: a report's push waits for one the background thread has under way, so the
        report sees every sample this process recorded before it.
        """
        with self._push_lock:
            collecting = self._ref.current is None
            pending = self._window.take_pending(self.clock(), with_candidates=collecting)
            self._shared.deliver(pending)
            if self._extra.kinds or self._extra.dimensions:
                features, vectors, feature_candidates, vector_candidates, _ = self._extra.take_pending(
                    with_candidates=collecting)
                self._shared.deliver_extra(features, vectors, feature_candidates, vector_candidates,
                                           self._extra.embedding_size)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver this process's pending samples to the store and flush it; ``True`` when nothing is left."""
        self._tel.apply_pending()
        self._push()
        return self.store.flush(timeout)

    def close(self) -> None:
        """Deliver pending samples and end the off-path thread (the store is closed by its owner).

        Idempotent; never raises.
        """
        try:
            self.flush()
        except Exception as exc:
            self._tel.fault("drift.close", exc)
        self._io.close()

    # ------------------------------------------------------------- reference
    def set_reference(self, *, anomaly_scores: Sequence[float] | FloatArray,
                      confidences: Sequence[float] | FloatArray,
                      features: Mapping[str, Sequence[float | str]] | None = None,
                      embeddings: Sequence[Sequence[float]] | FloatArray | None = None) -> None:
        """Use these outputs (e.g. from the validation run) as the reference, for every worker.

        Each sequence needs at least 2 values in [0, 1]; their lengths may
        differ. *features* gives each input feature's reference values
        (numbers, or strings for a categorical feature), *embeddings* the
        reference embeddings (rows; the newest *embedding_window* are kept).
        The reference is stored as a document, so workers sharing the store
        switch to it at their next report. Raises :class:`ValueError` for
        invalid values and :class:`~mlops_otel.stores.StoreError` when the store fails.
        """
        data = {ANOMALY_SCORE: _unit_array("anomaly_scores", anomaly_scores),
                CONFIDENCE: _unit_array("confidences", confidences)}
        vectors = None
        if embeddings is not None:
            vectors = np.asarray(embeddings, dtype=np.float64)
            if vectors.ndim != 2 or vectors.shape[0] < 4 or not np.isfinite(vectors).all():
                raise ValueError(f"embeddings must be at least 4 finite vectors of one dimension, "
                                 f"got shape {vectors.shape}")
            vectors = vectors[-self._extra.embedding_size:]
        kept = {name: reference_values(values, self._ref.size) for name, values in (features or {}).items()}
        self._ref.set(data, kept, vectors)

    def _stop_candidates(self) -> None:
        self._window.stop_candidates()
        self._extra.stop_candidates()

    def _learn_reference(self) -> None:
        try:
            self._ref.load()
        except StoreError as exc:
            self._tel.fault("drift.reference", exc)

    def _state_lost(self) -> None:
        """The store says it lost its state: write the reference back now (off this thread's caller)."""
        self._io.submit(self._learn_reference)

    def _restored(self, reference: Reference) -> None:
        """The store had lost the shared reference and this process wrote its copy back: say so, once."""
        self._tel.add(semconv.DRIFT_REFERENCE_RESTORED, self._labels, 1.0)
        log.warning("mlops-otel drift: the store lost the reference of %s %s (restarted empty?); wrote back "
                    "this worker's copy (%s, %d samples, id %s)", self.model_type, self.version, reference.source,
                    reference.size, reference.ref_id)

    # ------------------------------------------------------------ evaluation
    def run_periodic_check(self) -> None:
        """Deliver pending samples and check the local window, as *check_every* does; never raises.

        :class:`DriftMonitor` calls it from its background thread so requests do not pay for it.
        """
        self._tel.apply_pending()
        try:
            self._periodic_check()
        except Exception as exc:
            self._tel.fault("drift.check", exc)

    @property
    def has_reference(self) -> bool:
        """Whether this process knows the shared reference (loaded, learned or set)."""
        return self._ref.current is not None

    def deliver_pending(self) -> None:
        """Give this process's pending samples to the store without checking; never raises.

        The background checker calls it in the rounds it skips a detector's check.
        """
        self._tel.apply_pending()
        try:
            self._push()
        except Exception as exc:
            self._tel.fault("drift.check", exc)

    def _periodic_check(self) -> None:
        """The every-*check_every*-samples work of the hot path: deliver, then check locally."""
        self._window.mark_checked()
        self._push()
        if not self._eval_lock.acquire(blocking=False):
            return  # another thread is evaluating right now; the next period catches up
        try:
            now = self.clock()
            if self._ref.current is None or now - self._verified_at >= VERIFY_INTERVAL:
                # Learn the reference, or check that the store still has it (written back when lost).
                self._verified_at = now
                self._io.submit(self._learn_reference)
            report = self._report(self._ref.current, self._local_snapshot(), self._alert, "local", None)
            changed = report.alert_triggered != self._alert
            self._alert = report.alert_triggered
            self._publish(report)
        finally:
            self._eval_lock.release()
        if changed or self._alert != self._shared_alert:
            # Also retried here when an earlier transition could not be shared (I/O busy or failed).
            alert, score = report.alert_triggered, report.current_drift_score
            self._io.submit(lambda: self._persist_alert(alert, score))

    def check(self) -> DriftReport:
        """Evaluate this process's local window now, as the periodic check does, and return the report.

        Reads the store only to learn the reference (until known) and to share
        an alert transition; raises :class:`~mlops_otel.stores.StoreError` when that fails.
        """
        self._tel.apply_pending()
        with self._eval_lock:
            self._window.mark_checked()
            self._push()
            reference = self._ref.current or self._ref.load()
            report = self._report(reference, self._local_snapshot(), self._alert, "local", None)
            if report.alert_triggered != self._alert:
                self._persist_alert(report.alert_triggered, report.current_drift_score)
            self._alert = report.alert_triggered
            self._publish(report)
            return report

    def get_drift_report(self) -> DriftReport:
        """Evaluate the shared windows in the store: the same report on every worker for the same data.

        Delivers this process's pending samples first. Raises
        :class:`~mlops_otel.stores.StoreError` when the store fails.
        """
        self._tel.apply_pending()
        with self._eval_lock:
            self._push()
            self.store.flush()
            reference = self._ref.load()
            window = self._shared.read()
            previous = previous_champion(self.registry, self.model_type, self.version,
                                         lambda exc: self._tel.fault("drift.registry", exc))
            reports: list[DriftReport] = []

            def decide(prior: bool) -> tuple[bool, float]:
                reports.append(self._report(reference, window, prior, "shared", previous))
                return reports[-1].alert_triggered, reports[-1].current_drift_score

            self._shared.decide_alert(decide)
            report = reports[-1]
            self._alert = report.alert_triggered
            self._publish(report)
            return report

    def _record(self, report: DriftReport) -> None:
        outputs = report.outputs.values()
        try:
            self._shared.record({
                "time": report.evaluated_at, "score": report.current_drift_score, "threshold": report.threshold,
                "clear_threshold": report.clear_threshold, "status": report.level.value,
                "alert": report.alert_triggered, "scope": report.scope,
                "p_value": min((o.p_value for o in outputs), default=None),
                "effective_samples": min((o.effective_production_samples for o in outputs), default=None),
                "production_samples": report.production_samples,
                "features": {name: f.score for name, f in list(report.features.items())[:10]},
                "embedding": None if report.embedding is None else report.embedding.mmd2,
            })
        except Exception as exc:  # the history is a courtesy; never let it break a check
            self._tel.fault("drift.history", exc)

    def score_history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest evaluations of this model version, oldest first, shared by every worker.

        Each item: ``time``, ``score`` (the KS distance), ``threshold``,
        ``clear_threshold``, ``status`` (the level), ``alert``, ``scope``,
        ``p_value`` and ``effective_samples`` (of the output closest to
        significance), ``production_samples``, the top ``features`` scores and
        the ``embedding`` MMD^2. Kept in the store, capped at 500 items: every
        shared report and at most one local check per worker every 10 s (or on
        a change of level). Reads the store: call it off the request path.
        """
        self._tel.apply_pending()
        self._push()
        self.store.flush()
        # Workers' write-behind deliveries may interleave out of time order: sort by time.
        items = sorted(self._shared.history(), key=_time_of)
        return items if limit is None else items[-limit:]

    def distributions(self, points: int = 21) -> dict[str, Any]:
        """Reference and production quantiles (and category mixes) for plotting, from the shared windows.

        ``{"quantiles": [...], "outputs": {name: {"reference": [...], "production": [...]}},
        "features": {name: {"kind", "reference", "production"}}}``: numeric series are the values at
        *points* evenly spaced quantile levels; categorical ones the share of each category.
        Reads the store: call it off the request path.
        """
        if not isinstance(points, int) or isinstance(points, bool) or points < 2:
            raise InvalidValueError("points", "an int >= 2", points)
        self._tel.apply_pending()
        self._push()
        self.store.flush()
        reference = self._ref.load()
        window = self._shared.read()
        levels = np.linspace(0.0, 1.0, points)

        def q(values: FloatArray) -> list[float] | None:
            return np.quantile(values, levels).tolist() if values.shape[0] else None

        out: dict[str, Any] = {"quantiles": levels.tolist(), "outputs": {}, "features": {}}
        for name in OUTPUTS:
            out["outputs"][name] = {
                "reference": None if reference is None else q(reference.data[name]),
                "production": q(window.values[name])}
        refs = {} if reference is None else reference.features
        for name in sorted(set(refs) | set(window.features)):
            ref = refs.get(name)
            prod = window.features.get(name, [])
            categorical = (ref.kind == "categorical") if ref is not None else any(isinstance(v, str) for v in prod)
            if categorical:
                shares = {}
                for label, values in (("reference", None if ref is None else ref.counts), ("production", prod)):
                    counts = values if isinstance(values, Mapping) else collections.Counter(
                        v for v in (values or []) if isinstance(v, str))
                    total = sum(counts.values())
                    shares[label] = {k: c / total for k, c in sorted(counts.items())} if total else None
                out["features"][name] = {"kind": "categorical", **shares}
            else:
                numbers = np.asarray([v for v in prod if not isinstance(v, str)], dtype=np.float64)
                ref_q = None if ref is None or ref.numeric is None else q(ref.numeric.sorted_values)
                out["features"][name] = {"kind": "numeric", "reference": ref_q, "production": q(numbers)}
        return out

    def _local_snapshot(self) -> WindowSnapshot:
        window = self._window.snapshot()
        if not (self._extra.kinds or self._extra.dimensions):
            return window
        features, vectors = self._extra.snapshot()
        return attrs.evolve(window, features=features, embeddings=vectors)

    def _persist_alert(self, alert: bool, score: float) -> None:
        """Share a local check's alert transition (rare; a failure is counted, never raised)."""
        try:
            if self._shared.share_alert(alert, score):
                self._shared_alert = alert
        except StoreError as exc:
            self._tel.fault("drift.alert_state", exc)

    def _report(self, reference: Reference | None, window: WindowSnapshot, prior_alert: bool, scope: str,
                previous: str | None) -> DriftReport:
        ev: Evaluation = evaluate(self._rules, reference, window, prior_alert, self._workspace)
        return DriftReport(
            model_type=self.model_type, version=self.version, current_drift_score=ev.score,
            alert_triggered=ev.alert, level=ev.level,
            recommendation=recommend(self._rules, ev, has_reference=reference is not None,
                                     reference_size=self.reference_size, previous=previous,
                                     has_registry=self.registry is not None, scope=scope),
            outputs=ev.outputs, confidence_degradation=ev.degradation, performance_drift=ev.performance,
            threshold=self.threshold, clear_threshold=self._rules.clear_threshold, window_size=self.window_size,
            min_samples=self._rules.min_samples, production_samples=ev.production_samples,
            reference_samples=0 if reference is None else reference.size,
            reference_source=None if reference is None else reference.source,
            total_samples=window.total_samples, invalid_samples=window.invalid_samples,
            window_start=window.start, window_end=window.end,
            evaluated_at=self.clock(), scope=scope, features=ev.features, embedding=ev.embedding,
            calibration=self._calibration,
        )

    def _publish(self, report: DriftReport) -> None:
        self._last_report = report
        now = report.evaluated_at
        if report.scope == "shared" or now - self._recorded_at >= HISTORY_INTERVAL or (
                self._last_level is not report.level):
            self._recorded_at = now
            self._last_level = report.level
            self._record(report)
        if report.level is not DriftLevel.INSUFFICIENT_DATA:
            self._tel.set(semconv.MODEL_DRIFT_SCORE, self._labels, report.current_drift_score)
            for name, feature in report.features.items():
                self._tel.set(semconv.MODEL_FEATURE_DRIFT_SCORE, (*self._labels, name), feature.score)
            if report.embedding is not None:
                self._tel.set(semconv.MODEL_EMBEDDING_DRIFT_SCORE, self._labels, report.embedding.mmd2)
        self._tel.set(semconv.DRIFT_ALERT, self._labels, 1.0 if report.alert_triggered else 0.0)

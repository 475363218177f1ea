"""The drift detector of one model version: windows on a state store, KS/PSI reports, alerting."""

from __future__ import annotations

import enum
import logging
import math
import numbers
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from .. import semconv
from .._forksafe import after_fork_in_child
from ..stores import JSONValue, StateStore, StoreError, Versioned, make_key
from ._stats import (
    ConfidenceInterval,
    FloatArray,
    KSWorkspace,
    ReferenceSample,
    confidence_degradation,
    ks_pvalue,
)

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = ["ANOMALY_SCORE", "CONFIDENCE", "OUTPUTS", "DriftDetector", "DriftLevel", "DriftReport", "OutputDrift"]

log = logging.getLogger("mlops_otel.drift")

#: The monitored outputs, in report order.
ANOMALY_SCORE = "anomaly_score"
CONFIDENCE = "confidence"
OUTPUTS = (ANOMALY_SCORE, CONFIDENCE)

#: ``mlops_invalid_measurements_total{metric}`` labels of rejected samples.
INVALID_LABELS = {ANOMALY_SCORE: "drift.anomaly_score", CONFIDENCE: "drift.confidence"}

_NAMESPACE = "drift"
#: While samples arrive, pending ones reach the store at least this often (seconds).
_PUSH_INTERVAL = 1.0
#: Deliveries remembered for the shared window's time span (one ``[first, last, count]`` item each).
#: They cover the window unless a worker delivers fewer than window_size / 128 samples per
#: second; then the span's start is unknown (``None``). Reading them costs ~1 us per item.
_SPANS_KEPT = 128
_CAS_ATTEMPTS = 20
_SOURCE_EXPLICIT = "explicit"
_SOURCE_PRODUCTION = "production"


class DriftLevel(enum.StrEnum):
    """How worried a report is: not enough data, nothing to see, watch, act."""

    INSUFFICIENT_DATA = "insufficient_data"
    OK = "ok"
    WARNING = "warning"
    ALERT = "alert"


@attrs.frozen
class OutputDrift:
    """Drift of one monitored output: KS distance and p-value, PSI and both means.

    *significant*: the p-value is below the Bonferroni-corrected ``alpha``
    and the KS distance reaches ``warning_threshold``.
    """

    name: str
    ks_statistic: float
    p_value: float
    psi: float
    reference_mean: float
    production_mean: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return attrs.asdict(self)


@attrs.frozen
class DriftReport(Mapping[str, Any]):
    """One drift evaluation of a model version; also a read-only mapping.

    ``report["current_drift_score"]``, ``report["alert_triggered"]`` and
    ``report["recommendation"]`` work as in the seed, and so does every other
    key of :meth:`to_dict`. ``scope`` is ``"shared"`` for
    :meth:`DriftDetector.get_drift_report` (the store's windows, identical on
    every worker) and ``"local"`` for the periodic in-process checks.
    """

    model_type: str
    version: str
    current_drift_score: float
    alert_triggered: bool
    level: DriftLevel
    recommendation: str
    outputs: Mapping[str, OutputDrift]
    confidence_degradation: ConfidenceInterval | None
    performance_drift: bool
    threshold: float
    clear_threshold: float
    window_size: int
    min_samples: int
    production_samples: int
    reference_samples: int
    reference_source: str | None
    total_samples: int
    invalid_samples: int
    window_start: float | None
    window_end: float | None
    evaluated_at: float
    scope: str

    @property
    def time_span_seconds(self) -> float | None:
        """Seconds between the oldest and the newest sample of the production window (``None``: unknown)."""
        if self.window_start is None or self.window_end is None:
            return None
        return self.window_end - self.window_start

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-friendly values (the mapping view reads this)."""
        degradation = self.confidence_degradation
        return {
            "model_type": self.model_type,
            "version": self.version,
            "current_drift_score": self.current_drift_score,
            "alert_triggered": self.alert_triggered,
            "level": self.level.value,
            "recommendation": self.recommendation,
            "threshold": self.threshold,
            "clear_threshold": self.clear_threshold,
            "ks_statistic": {name: out.ks_statistic for name, out in self.outputs.items()},
            "p_value": {name: out.p_value for name, out in self.outputs.items()},
            "psi": {name: out.psi for name, out in self.outputs.items()},
            "outputs": {name: out.to_dict() for name, out in self.outputs.items()},
            "confidence_degradation": None if degradation is None else attrs.asdict(degradation),
            "performance_drift": self.performance_drift,
            "window_size": self.window_size,
            "min_samples": self.min_samples,
            "production_samples": self.production_samples,
            "reference_samples": self.reference_samples,
            "reference_source": self.reference_source,
            "total_samples": self.total_samples,
            "invalid_samples": self.invalid_samples,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "time_span_seconds": self.time_span_seconds,
            "evaluated_at": self.evaluated_at,
            "scope": self.scope,
        }

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


# ---------------------------------------------------------------- validation
def _check_name(field: str, value: object) -> str:
    if (not isinstance(value, str) or not value.strip() or "{" in value or "}" in value
            or any(ord(c) < 32 for c in value)):
        raise ValueError(f"{field} must be a non-empty string without braces or control characters, got {value!r}")
    return value


def _check_int(field: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{field} must be an int >= {minimum}, got {value!r}")
    return value


def _check_fraction(field: str, value: object, *, open_low: bool = False, open_high: bool = False) -> float:
    """Return *value* as a float if it lies in [0, 1] (ends open on request), else raise."""
    v = math.nan
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        v = float(value)
    ok = (v > 0.0 if open_low else v >= 0.0) and (v < 1.0 if open_high else v <= 1.0)
    if not ok:
        span = ("(0" if open_low else "[0") + ", " + ("1)" if open_high else "1]")
        raise ValueError(f"{field} must be a number in {span}, got {value!r}")
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


def _unit_values(raw: Sequence[JSONValue]) -> FloatArray:
    """A store window as an array of its numbers in [0, 1] (anything else is skipped)."""
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.asarray([x for x in raw if isinstance(x, (int, float)) and not isinstance(x, bool)],
                           dtype=np.float64)
    if array.ndim != 1:
        return np.empty(0)
    ok = (array >= 0.0) & (array <= 1.0)
    return array if bool(ok.all()) else array[ok]


def _version_of(entry: object) -> str | None:
    """The version an entry names: a string, ``entry.version`` or ``entry["version"]``."""
    if isinstance(entry, str):
        return entry
    value = entry.get("version") if isinstance(entry, Mapping) else getattr(entry, "version", None)
    return value if isinstance(value, str) else None


def _field(entry: object, name: str) -> object:
    return entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)


@attrs.frozen
class _Reference:
    """The reference in use: its id in the store, its origin, one prepared sample per output."""

    ref_id: str
    source: str
    samples: Mapping[str, ReferenceSample]

    @property
    def size(self) -> int:
        return min(s.size for s in self.samples.values())


@attrs.frozen
class _Window:
    """A production window as arrays, with its time span and the counts that go into a report."""

    values: Mapping[str, FloatArray]
    start: float | None
    end: float | None
    total_samples: int
    invalid_samples: int

    @property
    def size(self) -> int:
        return min(int(v.shape[0]) for v in self.values.values())


@attrs.frozen
class _Pending:
    """Samples and counts taken from the local buffer for one delivery to the store."""

    scores: FloatArray
    confidences: FloatArray
    first: float
    last: float
    accepted: int
    invalid: int
    candidates: list[tuple[float, float]]


# ------------------------------------------------------------------ detector
# on_setattr=NO_OP: the hot path assigns a dozen private counters per sample; attrs' default
# validate-on-setattr hook would make each assignment a Python-level call (~0.2 us).
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
    outputs against the reference (0..1). The alert turns on at *threshold*
    once the window holds *min_samples* samples and turns off below
    *clear_threshold* (hysteresis). A shift below the alert that is
    statistically significant (p below *alpha*, Bonferroni-corrected over the
    outputs) and at least *warning_threshold* is a warning. Performance
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
    warning_threshold: float = attrs.field(default=0.1, kw_only=True)
    confidence_drop: float = attrs.field(default=0.05, kw_only=True)
    interval_level: float = attrs.field(default=0.95, kw_only=True)
    psi_bins: int = attrs.field(default=10, kw_only=True, validator=lambda _, a, v: _check_int(a.name, v, 2))
    #: ``True`` when a background thread calls :meth:`run_periodic_check` (as
    #: :class:`DriftMonitor` does): samples are then delivered there, never on the hot path.
    background_checks: bool = attrs.field(default=False, kw_only=True)
    clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True, repr=False)

    _tel: Telemetry = attrs.field(init=False, repr=False)
    # The resolved values of the optional settings above.
    _ref_size: int = attrs.field(default=0, init=False, repr=False)
    _min_n: int = attrs.field(default=0, init=False, repr=False)
    _clear: float = attrs.field(default=0.0, init=False, repr=False)
    _labels: tuple[str, str] = attrs.field(init=False, repr=False)
    _keys: dict[str, str] = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _eval_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _push_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    # The local ring buffer: the newest window_size samples this process accepted.
    _scores: FloatArray = attrs.field(init=False, repr=False)
    _confs: FloatArray = attrs.field(init=False, repr=False)
    _times: FloatArray = attrs.field(init=False, repr=False)
    _pos: int = attrs.field(default=0, init=False, repr=False)
    _filled: int = attrs.field(default=0, init=False, repr=False)
    _accepted: int = attrs.field(default=0, init=False, repr=False)
    _invalid: int = attrs.field(default=0, init=False, repr=False)
    # Write-behind: samples at the ring's head, and counts, not yet given to the store.
    _unpushed: int = attrs.field(default=0, init=False, repr=False)
    _unpushed_accepted: int = attrs.field(default=0, init=False, repr=False)
    _unpushed_invalid: int = attrs.field(default=0, init=False, repr=False)
    _push_every: int = attrs.field(default=100, init=False, repr=False)
    _last_push: float = attrs.field(default=0.0, init=False, repr=False)
    _since_check: int = attrs.field(default=0, init=False, repr=False)
    # Default reference: this process's first samples, offered to the store until a reference exists.
    _candidates: list[tuple[float, float]] | None = attrs.field(factory=list, init=False, repr=False)
    _candidates_sent: int = attrs.field(default=0, init=False, repr=False)
    _reference: _Reference | None = attrs.field(default=None, init=False, repr=False)
    _alert: bool = attrs.field(default=False, init=False, repr=False)
    # The alert state this process last shared through the store (transitions are retried until equal).
    _shared_alert: bool = attrs.field(default=False, init=False, repr=False)
    _last_report: DriftReport | None = attrs.field(default=None, init=False, repr=False)
    _workspace: KSWorkspace = attrs.field(factory=KSWorkspace, init=False, repr=False)
    _io_busy: bool = attrs.field(default=False, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.threshold = _check_fraction("threshold", self.threshold, open_low=True)
        if self.clear_threshold is None:
            self.clear_threshold = max(0.0, self.threshold - 0.05)
        self.clear_threshold = _check_fraction("clear_threshold", self.clear_threshold)
        if self.clear_threshold > self.threshold:
            raise ValueError(f"clear_threshold must be <= threshold ({self.threshold!r}), "
                             f"got {self.clear_threshold!r}")
        if self.reference_size is None:
            self.reference_size = self.window_size
        _check_int("reference_size", self.reference_size, 2)
        if self.min_samples is None:
            self.min_samples = max(2, self.window_size // 2)
        _check_int("min_samples", self.min_samples, 1)
        if self.min_samples > self.window_size:
            raise ValueError(f"min_samples must be <= window_size ({self.window_size}), got {self.min_samples!r}")
        if self.check_every is not None:
            _check_int("check_every", self.check_every, 1)
        self._ref_size, self._min_n, self._clear = self.reference_size, self.min_samples, self.clear_threshold
        self.alpha = _check_fraction("alpha", self.alpha, open_low=True, open_high=True)
        self.warning_threshold = _check_fraction("warning_threshold", self.warning_threshold)
        self.confidence_drop = _check_fraction("confidence_drop", self.confidence_drop)
        self.interval_level = _check_fraction("interval_level", self.interval_level, open_low=True, open_high=True)
        if self.telemetry is None:
            from ..telemetry import default_telemetry

            self._tel = default_telemetry()
        else:
            self._tel = self.telemetry
        self._labels = (self.model_type, self.version)
        group = f"{self.model_type}:{self.version}"
        self._keys = {
            name: make_key(_NAMESPACE, group, *name.split("/"))
            for name in ("scores", "confidences", "spans", "counts", "reference", "alert",
                         "reference_candidates/scores", "reference_candidates/confidences")
        }
        self._scores = np.zeros(self.window_size)
        self._confs = np.zeros(self.window_size)
        self._times = np.zeros(self.window_size)
        self._push_every = min(self.check_every or 100, self.window_size)
        self._last_push = self.clock()
        after_fork_in_child(self, DriftDetector._after_fork)

    def _after_fork(self) -> None:
        # A forked worker starts its own local window; the parent's pending samples are the parent's.
        self._lock = threading.Lock()
        self._eval_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._pos = self._filled = self._accepted = self._invalid = self._since_check = 0
        self._unpushed = self._unpushed_accepted = self._unpushed_invalid = 0
        self._candidates = None if self._reference is not None else []
        self._candidates_sent = 0
        self._workspace = KSWorkspace()
        self._io_busy = False

    # ---------------------------------------------------------------- access
    @property
    def key(self) -> str:
        """``"<model_type>:<version>"``: the detector's key in :meth:`DriftMonitor.detectors`."""
        return f"{self.model_type}:{self.version}"

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
        return self._filled

    @property
    def accepted_samples(self) -> int:
        """Valid samples this process has recorded since the detector was created."""
        return self._accepted

    def store_keys(self) -> list[str]:
        """Every store key this detector may write (for inspection and clean-up)."""
        return sorted(self._keys.values())

    # -------------------------------------------------------------- hot path
    def add_production_sample(self, anomaly_score: float, confidence: float) -> None:
        """Record one prediction's outputs: O(1), never raises.

        NaN, infinite, out-of-range or non-numeric values are counted in
        ``mlops_invalid_measurements_total{metric="drift.anomaly_score"}`` (or
        ``"drift.confidence"``) and the sample is skipped. Every *check_every*
        samples this call also delivers the pending samples to the store and
        runs a local check (tens of microseconds for a 1,000-sample window).
        """
        try:
            score = anomaly_score if type(anomaly_score) is float else _as_float(anomaly_score)
            conf = confidence if type(confidence) is float else _as_float(confidence)
            if not (0.0 <= score <= 1.0 and 0.0 <= conf <= 1.0):
                self._reject(score, conf, anomaly_score, confidence)
                return
            now = self.clock()
            with self._lock:
                i = self._pos
                self._scores[i] = score
                self._confs[i] = conf
                self._times[i] = now
                self._pos = i + 1 if i + 1 < self.window_size else 0
                if self._filled < self.window_size:
                    self._filled += 1
                self._accepted += 1
                self._unpushed_accepted += 1
                if self._unpushed < self.window_size:
                    self._unpushed += 1
                self._since_check += 1
                candidates = self._candidates
                if candidates is not None and len(candidates) < self._ref_size:
                    candidates.append((score, conf))
                due_check = self.check_every is not None and self._since_check >= self.check_every
                due_push = not self.background_checks and (
                    self._unpushed >= self._push_every or now - self._last_push >= _PUSH_INTERVAL)
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
        with self._lock:
            self._invalid += 1
            self._unpushed_invalid += 1

    def add_production_samples(self, anomaly_scores: Sequence[float] | FloatArray,
                               confidences: Sequence[float] | FloatArray) -> None:
        """Record a batch of predictions (two equal-length sequences); never raises.

        Equivalent to adding the samples one by one, except that all get the
        same timestamp and the statistics run at most once, at the end of the
        batch. Invalid pairs are counted and skipped as in the per-sample call.
        """
        try:
            self._add_batch(np.asarray(anomaly_scores, dtype=np.float64).reshape(-1),
                            np.asarray(confidences, dtype=np.float64).reshape(-1))
        except Exception as exc:
            self._tel.fault("drift.add_production_samples", exc)

    def _add_batch(self, scores: FloatArray, confs: FloatArray) -> None:
        if scores.shape != confs.shape:
            n = min(scores.shape[0], confs.shape[0])
            extra = abs(scores.shape[0] - confs.shape[0])
            longer = ANOMALY_SCORE if scores.shape[0] > n else CONFIDENCE
            self._tel.add(semconv.INVALID_MEASUREMENTS, (INVALID_LABELS[longer],), float(extra))
            with self._lock:
                self._invalid += extra
                self._unpushed_invalid += extra
            scores, confs = scores[:n], confs[:n]
        ok_score = (scores >= 0.0) & (scores <= 1.0)
        ok_conf = (confs >= 0.0) & (confs <= 1.0)
        for name, ok_field in ((ANOMALY_SCORE, ok_score), (CONFIDENCE, ok_conf)):
            bad = int(ok_field.shape[0] - np.count_nonzero(ok_field))
            if bad:
                self._tel.add(semconv.INVALID_MEASUREMENTS, (INVALID_LABELS[name],), float(bad))
        ok = ok_score & ok_conf
        rejected = int(ok.shape[0] - np.count_nonzero(ok))
        if rejected:
            scores, confs = scores[ok], confs[ok]
        k = int(scores.shape[0])
        now = self.clock()
        size = self.window_size
        with self._lock:
            self._invalid += rejected
            self._unpushed_invalid += rejected
            if k:
                tail = min(k, size)
                idx = (self._pos + np.arange(tail)) % size
                self._scores[idx] = scores[-tail:]
                self._confs[idx] = confs[-tail:]
                self._times[idx] = now
                self._pos = (self._pos + tail) % size
                self._filled = min(size, self._filled + tail)
                self._accepted += k
                self._unpushed_accepted += k
                self._unpushed = min(size, self._unpushed + k)
                self._since_check += k
                candidates = self._candidates
                room = 0 if candidates is None else self._ref_size - len(candidates)
                if candidates is not None and room > 0:
                    candidates.extend(zip(scores[:room].tolist(), confs[:room].tolist(), strict=True))
            due_check = self.check_every is not None and self._since_check >= self.check_every
            due_push = not self.background_checks and (
                self._unpushed >= self._push_every or now - self._last_push >= _PUSH_INTERVAL)
        if due_check:
            self._periodic_check()
        elif due_push:
            self._push()

    # ---------------------------------------------------------- write-behind
    def _take_pending(self) -> _Pending:
        with self._lock:
            k = self._unpushed
            idx = (self._pos - k + np.arange(k)) % self.window_size
            times = self._times[idx]
            pending = _Pending(self._scores[idx], self._confs[idx], float(times.min()) if k else 0.0,
                               float(times.max()) if k else 0.0, self._unpushed_accepted, self._unpushed_invalid, [])
            self._unpushed = self._unpushed_accepted = self._unpushed_invalid = 0
            self._last_push = self.clock()
            if self._candidates is not None and self._reference is None:
                pending.candidates.extend(self._candidates[self._candidates_sent:])
                self._candidates_sent = len(self._candidates)
        return pending

    def _push(self) -> None:
        """Give this process's pending samples and counts to the store (which may buffer them).

        Serialised: a report's push waits for one the background thread has under way, so the
        report sees every sample this process recorded before it.
        """
        with self._push_lock:
            self._push_pending()

    def _push_pending(self) -> None:
        pending = self._take_pending()
        size = self.window_size
        store, keys = self.store, self._keys
        k = int(pending.scores.shape[0])
        if k:
            store.append(keys["scores"], pending.scores.tolist(), max_len=size)
            store.append(keys["confidences"], pending.confidences.tolist(), max_len=size)
            # One [first, last, count] item per delivery, not a timestamp per sample: enough for the
            # window's time span, and a third less to encode, keep and read.
            store.append(keys["spans"], [[pending.first, pending.last, k]], max_len=_SPANS_KEPT)
        if pending.accepted or pending.invalid:
            store.incr(keys["counts"], {"samples": float(pending.accepted), "invalid": float(pending.invalid)})
        if pending.candidates:
            ref_size = self._ref_size
            store.append(keys["reference_candidates/scores"], [s for s, _ in pending.candidates], max_len=ref_size)
            store.append(keys["reference_candidates/confidences"], [c for _, c in pending.candidates],
                         max_len=ref_size)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver this process's pending samples to the store and flush it; ``True`` when nothing is left."""
        self._push()
        return self.store.flush(timeout)

    def close(self) -> None:
        """Deliver pending samples (the store itself is closed by its owner). Idempotent; never raises."""
        try:
            self.flush()
        except Exception as exc:
            self._tel.fault("drift.close", exc)

    # ------------------------------------------------------------- reference
    def set_reference(self, *, anomaly_scores: Sequence[float] | FloatArray,
                      confidences: Sequence[float] | FloatArray) -> None:
        """Use these outputs (e.g. from the validation run) as the reference, for every worker.

        Each sequence needs at least 2 values in [0, 1]; their lengths may
        differ. The reference is stored as a document, so workers sharing
        the store switch to it at their next report. Raises
        :class:`ValueError` for invalid values and
        :class:`~mlops_otel.stores.StoreError` when the store fails.
        """
        scores = _unit_array("anomaly_scores", anomaly_scores)
        confs = _unit_array("confidences", confidences)
        reference = self._prepare(secrets.token_hex(8), _SOURCE_EXPLICIT, scores, confs)
        self._write_data(reference.ref_id, scores, confs)
        pointer = self._pointer_value(reference, scores.shape[0], confs.shape[0])
        for _ in range(_CAS_ATTEMPTS):
            current = self.store.get_document(self._keys["reference"])
            if self.store.compare_and_set(self._keys["reference"], pointer,
                                          expected_version=0 if current is None else current.version):
                self._adopt(reference)
                old = self._pointer_id(current)
                if old is not None and old != reference.ref_id:
                    self._discard(self._data_key(old))
                return
        raise StoreError("compare_and_set", self._keys["reference"],
                         RuntimeError(f"reference kept changing; gave up after {_CAS_ATTEMPTS} attempts"))

    def _prepare(self, ref_id: str, source: str, scores: FloatArray, confs: FloatArray) -> _Reference:
        return _Reference(ref_id, source, {
            ANOMALY_SCORE: ReferenceSample.from_values(scores, bins=self.psi_bins),
            CONFIDENCE: ReferenceSample.from_values(confs, bins=self.psi_bins),
        })

    def _data_key(self, ref_id: str) -> str:
        return f"{self._keys['reference']}:{ref_id}"

    def _write_data(self, ref_id: str, scores: FloatArray, confs: FloatArray) -> None:
        data: JSONValue = {ANOMALY_SCORE: scores.tolist(), CONFIDENCE: confs.tolist()}
        if not self.store.compare_and_set(self._data_key(ref_id), data, expected_version=0):
            raise StoreError("compare_and_set", self._data_key(ref_id),
                             RuntimeError("a fresh random reference id was already taken"))

    def _pointer_value(self, reference: _Reference, n_scores: int, n_confs: int) -> JSONValue:
        return {"id": reference.ref_id, "source": reference.source, "created_at": self.clock(),
                "sizes": {ANOMALY_SCORE: n_scores, CONFIDENCE: n_confs}}

    @staticmethod
    def _pointer_id(doc: Versioned | None) -> str | None:
        if doc is None or not isinstance(doc.value, dict):
            return None
        ref_id = doc.value.get("id")
        return ref_id if isinstance(ref_id, str) else None

    def _discard(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:  # an orphan costs memory only; log and go on
            log.warning("mlops-otel drift: could not delete %s: %s", key, exc)

    def _adopt(self, reference: _Reference) -> None:
        with self._lock:
            self._reference = reference
            self._candidates = None

    def _load_shared_reference(self) -> _Reference | None:
        """The store's reference (loading its data when it changed), freezing the default one if due."""
        for _ in range(3):
            pointer = self.store.get_document(self._keys["reference"])
            ref_id = self._pointer_id(pointer)
            if pointer is None or ref_id is None:
                return self._establish_default()
            current = self._reference
            if current is not None and current.ref_id == ref_id:
                return current
            data = self.store.get_document(self._data_key(ref_id))
            if data is None or not isinstance(data.value, dict):
                continue  # replaced while we read it: read the pointer again
            assert isinstance(pointer.value, dict)
            source = pointer.value.get("source")
            reference = self._prepare(ref_id, source if isinstance(source, str) else _SOURCE_EXPLICIT,
                                      _unit_values(_as_list(data.value.get(ANOMALY_SCORE))),
                                      _unit_values(_as_list(data.value.get(CONFIDENCE))))
            self._adopt(reference)
            return reference
        return self._reference

    def _establish_default(self) -> _Reference | None:
        """Freeze the first *reference_size* production samples as the shared reference, once enough exist."""
        size = self._ref_size
        counts = self.store.read_counters(self._keys["counts"])
        if counts.get("samples", 0.0) < size:
            return None
        self.store.flush()
        scores = _unit_values(self.store.read_window(self._keys["reference_candidates/scores"]))
        confs = _unit_values(self.store.read_window(self._keys["reference_candidates/confidences"]))
        if min(scores.shape[0], confs.shape[0]) < size:
            return None
        reference = self._prepare(secrets.token_hex(8), _SOURCE_PRODUCTION, scores, confs)
        self._write_data(reference.ref_id, scores, confs)
        pointer = self._pointer_value(reference, scores.shape[0], confs.shape[0])
        if self.store.compare_and_set(self._keys["reference"], pointer, expected_version=0):
            self._adopt(reference)
            self._discard(self._keys["reference_candidates/scores"])
            self._discard(self._keys["reference_candidates/confidences"])
            return reference
        # Another worker froze its candidates first: use theirs.
        self._discard(self._data_key(reference.ref_id))
        return self._load_shared_reference()

    # ------------------------------------------------------------ evaluation
    def run_periodic_check(self) -> None:
        """Deliver pending samples and check the local window, as *check_every* does; never raises.

        :class:`DriftMonitor` calls it from its background thread so requests do not pay for it.
        """
        try:
            self._periodic_check()
        except Exception as exc:
            self._tel.fault("drift.check", exc)

    def _periodic_check(self) -> None:
        """The every-*check_every*-samples work of the hot path: deliver, then check locally."""
        with self._lock:
            self._since_check = 0
        self._push()
        if not self._eval_lock.acquire(blocking=False):
            return  # another thread is evaluating right now; the next period catches up
        try:
            if self._reference is None:
                self._off_path(self._learn_reference)
            report = self._evaluate(self._reference, self._local_window(), self._alert, "local", None)
            changed = report.alert_triggered != self._alert
            self._alert = report.alert_triggered
            self._publish(report)
        finally:
            self._eval_lock.release()
        if changed or self._alert != self._shared_alert:
            # Also retried here when an earlier transition could not be shared (I/O busy or failed).
            alert, score = report.alert_triggered, report.current_drift_score
            self._off_path(lambda: self._persist_alert(alert, score))

    def _off_path(self, task: Callable[[], None]) -> None:
        """Run store I/O a local check needs without blocking the request on the network.

        On the in-memory store the I/O is a dictionary lookup and runs inline;
        on other stores it runs in a short-lived daemon thread, one at a time
        (a task arriving while one runs is dropped: it is retried at the next check).
        """
        if self.store.kind == "memory":
            task()
            return
        with self._lock:
            if self._io_busy:
                return
            self._io_busy = True

        def run() -> None:
            try:
                task()
            finally:
                self._io_busy = False

        threading.Thread(target=run, name="mlops-otel-drift-io", daemon=True).start()

    def _learn_reference(self) -> None:
        try:
            self._load_shared_reference()
        except StoreError as exc:
            self._tel.fault("drift.reference", exc)

    def check(self) -> DriftReport:
        """Evaluate this process's local window now, as the periodic check does, and return the report.

        Reads the store only to learn the reference (until known) and to share
        an alert transition; raises :class:`~mlops_otel.stores.StoreError` when that fails.
        """
        with self._eval_lock:
            with self._lock:
                self._since_check = 0
            self._push()
            reference = self._reference or self._load_shared_reference()
            report = self._evaluate(reference, self._local_window(), self._alert, "local", None)
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
        with self._eval_lock:
            self._push()
            self.store.flush()
            reference = self._load_shared_reference()
            window = self._shared_window()
            previous = self._previous_champion()
            for _ in range(_CAS_ATTEMPTS):
                doc = self.store.get_document(self._keys["alert"])
                prior = bool(doc.value.get("alert")) if doc is not None and isinstance(doc.value, dict) else False
                report = self._evaluate(reference, window, prior, "shared", previous)
                if report.alert_triggered == prior or self.store.compare_and_set(
                    self._keys["alert"], self._alert_doc(report.alert_triggered, report.current_drift_score),
                    expected_version=0 if doc is None else doc.version,
                ):
                    break
            self._alert = report.alert_triggered
            self._publish(report)
            return report

    def _alert_doc(self, alert: bool, score: float) -> JSONValue:
        return {"alert": alert, "score": score, "changed_at": self.clock()}

    def _persist_alert(self, alert: bool, score: float) -> None:
        """Share a local check's alert transition (rare; a failure is counted, never raised)."""
        try:
            for _ in range(_CAS_ATTEMPTS):
                doc = self.store.get_document(self._keys["alert"])
                if doc is not None and isinstance(doc.value, dict) and bool(doc.value.get("alert")) == alert:
                    self._shared_alert = alert
                    return
                if self.store.compare_and_set(self._keys["alert"], self._alert_doc(alert, score),
                                              expected_version=0 if doc is None else doc.version):
                    self._shared_alert = alert
                    return
        except StoreError as exc:
            self._tel.fault("drift.alert_state", exc)

    def _local_window(self) -> _Window:
        with self._lock:
            n = self._filled
            values = {ANOMALY_SCORE: self._scores[:n].copy(), CONFIDENCE: self._confs[:n].copy()}
            times = self._times[:n]
            start, end = (float(times.min()), float(times.max())) if n else (None, None)
            return _Window(values, start, end, self._accepted, self._invalid)

    def _shared_window(self) -> _Window:
        read = self.store.read_window
        values = {ANOMALY_SCORE: _unit_values(read(self._keys["scores"])),
                  CONFIDENCE: _unit_values(read(self._keys["confidences"]))}
        start, end = _span(read(self._keys["spans"]), min(int(v.shape[0]) for v in values.values()))
        counts = self.store.read_counters(self._keys["counts"])
        return _Window(values, start, end, int(counts.get("samples", 0.0)), int(counts.get("invalid", 0.0)))

    def _evaluate(self, reference: _Reference | None, window: _Window, prior_alert: bool, scope: str,
                  previous_champion: str | None) -> DriftReport:
        n = window.size
        outputs: dict[str, OutputDrift] = {}
        degradation: ConfidenceInterval | None = None
        performance = False
        score = 0.0
        if reference is not None and n > 0:
            alpha = self.alpha / len(OUTPUTS)
            for name in OUTPUTS:
                ref = reference.samples[name]
                sample = window.values[name]
                ordered = np.sort(sample)
                statistic = ref.ks_statistic(ordered, self._workspace)
                p_value = ks_pvalue(statistic, ref.size, int(sample.shape[0]))
                outputs[name] = OutputDrift(
                    name, statistic, p_value, ref.psi_sorted(ordered), ref.mean, float(sample.mean()),
                    p_value < alpha and statistic >= self.warning_threshold,
                )
            score = max(out.ks_statistic for out in outputs.values())
            degradation = confidence_degradation(reference.samples[CONFIDENCE], window.values[CONFIDENCE],
                                                 level=self.interval_level)
            performance = degradation.low > 0.0 and degradation.estimate >= self.confidence_drop
        enough = reference is not None and n >= self._min_n
        clear = self._clear
        alert = enough and (score >= clear if prior_alert else score >= self.threshold)
        if not enough:
            level = DriftLevel.INSUFFICIENT_DATA
        elif alert:
            level = DriftLevel.ALERT
        elif performance or any(out.significant for out in outputs.values()):
            level = DriftLevel.WARNING
        else:
            level = DriftLevel.OK
        return DriftReport(
            model_type=self.model_type, version=self.version, current_drift_score=score,
            alert_triggered=alert, level=level,
            recommendation=self._recommend(level, score, outputs, degradation, performance, reference, n,
                                           previous_champion, scope),
            outputs=outputs, confidence_degradation=degradation, performance_drift=performance and enough,
            threshold=self.threshold, clear_threshold=clear, window_size=self.window_size,
            min_samples=self._min_n, production_samples=n,
            reference_samples=0 if reference is None else reference.size,
            reference_source=None if reference is None else reference.source,
            total_samples=window.total_samples, invalid_samples=window.invalid_samples,
            window_start=window.start, window_end=window.end,
            evaluated_at=self.clock(), scope=scope,
        )

    def _publish(self, report: DriftReport) -> None:
        self._last_report = report
        if report.level is not DriftLevel.INSUFFICIENT_DATA:
            self._tel.set(semconv.MODEL_DRIFT_SCORE, self._labels, report.current_drift_score)
        self._tel.set(semconv.DRIFT_ALERT, self._labels, 1.0 if report.alert_triggered else 0.0)

    # -------------------------------------------------------- recommendation
    def _previous_champion(self) -> str | None:
        """The version to roll back to according to the registry, or ``None``."""
        registry = self.registry
        if registry is None:
            return None
        try:
            get_champion = getattr(registry, "get_champion", None)
            history = getattr(registry, "history", None)
            if get_champion is None and history is None:
                if callable(registry):
                    return _version_of(registry(self.model_type, self.version))
                return None
            if callable(get_champion):
                current = _version_of(get_champion(self.model_type))
                if current is not None and current != self.version:
                    return current  # this version is a challenger: the champion is the way back
            if callable(history):
                for change in reversed(list(history(self.model_type))):
                    previous = _field(change, "previous_champion")
                    if (_version_of(change) == self.version and isinstance(previous, str)
                            and previous != self.version):
                        return previous
        except Exception as exc:  # naming a version is a courtesy; the report must still be produced
            self._tel.fault("drift.registry", exc)
        return None

    def _recommend(self, level: DriftLevel, score: float, outputs: Mapping[str, OutputDrift],
                   degradation: ConfidenceInterval | None, performance: bool, reference: _Reference | None,
                   n: int, previous_champion: str | None, scope: str) -> str:
        if level is DriftLevel.INSUFFICIENT_DATA:
            if reference is None:
                return (f"Collecting data: no reference yet (set_reference(), or the first {self.reference_size} "
                        "production samples become the reference). No action needed.")
            return (f"Collecting data: {n} of the {self.min_samples} production samples needed "
                    "before alerting. No action needed.")
        conf = outputs[CONFIDENCE]
        if performance and degradation is not None:
            if previous_champion is not None:
                target = f"roll back to the previous champion {previous_champion}"
            elif self.registry is not None and scope == "shared":
                target = "roll back to the previous champion (the registry names none for this version)"
            else:
                target = "roll back to the previous champion"
            shifted = [o.name for o in outputs.values() if o.ks_statistic >= self.threshold]
            where = f"; {', '.join(shifted)} shifted (KS {score:.2f})" if shifted else ""
            return (f"Performance drift: mean confidence fell from {conf.reference_mean:.2f} to "
                    f"{conf.production_mean:.2f} (-{degradation.estimate:.3f}, {degradation.level:.0%} interval "
                    f"{degradation.low:.3f} to {degradation.high:.3f}){where}. Retrain on recent data or {target}.")
        if level is DriftLevel.ALERT:
            moved = [o for o in outputs.values() if o.ks_statistic >= self._clear]
            names = " and ".join(f"{o.name} (KS {o.ks_statistic:.2f})" for o in moved)
            return (f"Output distribution shifted: {names}, alert threshold {self.threshold:.2f}, while mean "
                    f"confidence holds ({conf.reference_mean:.2f} -> {conf.production_mean:.2f}). Check the input "
                    "pipeline (feature extraction, upstream schema or units, sensor calibration, traffic mix) "
                    "before retraining.")
        if level is DriftLevel.WARNING:
            significant = [o for o in outputs.values() if o.significant]
            names = " and ".join(f"{o.name} (KS {o.ks_statistic:.2f}, p={o.p_value:.1e})" for o in significant)
            return (f"Watch: {names} shifted significantly but below the {self.threshold:.2f} alert threshold. "
                    "Check recent changes to the input data or traffic mix; no rollback needed yet.")
        return f"No action: outputs match the reference (drift score {score:.2f} < {self.threshold:.2f})."


def _span(spans: Sequence[JSONValue], n: int) -> tuple[float | None, float | None]:
    """Time span of the newest *n* samples from the deliveries' ``[first, last, count]`` items.

    The start is the first timestamp of the oldest delivery still (partly) in the
    window, so the span is exact to one delivery (at most ``check_every`` samples
    or one second of one worker's traffic); ``None`` when the remembered
    deliveries do not reach back to the window's oldest sample.
    """
    start: float | None = None
    end: float | None = None
    covered = 0
    for item in reversed(spans):
        if not (isinstance(item, list) and len(item) == 3):
            continue
        first, last, count = item
        if not (isinstance(first, (int, float)) and isinstance(last, (int, float)) and isinstance(count, int)):
            continue
        end = float(last) if end is None else max(end, float(last))
        start = float(first) if start is None else min(start, float(first))
        covered += count
        if covered >= n:
            return start, end
    return None, end


def _as_list(value: object) -> list[JSONValue]:
    return value if isinstance(value, list) else []

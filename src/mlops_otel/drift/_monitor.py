"""The owner of every drift detector of a process."""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from .._forksafe import after_fork_in_child
from .._worker import PeriodicWorker, fault_hook
from ..settings import DriftSettings
from ..stores import StateStore
from ..validation import InvalidValueError
from ._detector import DriftDetector, DriftReport
from ._shared import detector_key

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = ["DriftMonitor"]

#: The defaults are DriftSettings' (written once there).
_D = attrs.fields(DriftSettings)

log = logging.getLogger("mlops_otel.drift")

#: The background checker evaluates a detector once this share of its window is new (#16) ...
CHECK_FRACTION = 0.05
#: ... or once it has skipped this many rounds with some new samples (so low traffic is still checked).
MAX_SKIPPED_ROUNDS = 5


def _telemetry_of(monitor: DriftMonitor) -> Telemetry:
    if monitor.telemetry is not None:
        return monitor.telemetry
    from ..telemetry import default_telemetry

    return default_telemetry()


@attrs.define(eq=False)
class DriftMonitor:
    """Creates, keeps and closes the :class:`DriftDetector` of each model version.

    Every detector shares the monitor's *store*, *telemetry* and *registry*;
    the other keyword arguments are the defaults of new detectors (see
    :class:`DriftDetector`). ``mlops_otel.get_drift_detector`` and
    ``mlops_otel.drift_detectors`` are this API on the default runtime's monitor.

    The monitor keeps the statistics off the request path: its detectors are
    created with ``check_every=None`` and a background thread delivers each
    detector's pending samples every *check_interval* seconds and runs its
    local check, which updates the ``model_drift_score`` and
    ``model_drift_alert`` gauges, when enough new samples arrived (see
    :meth:`check_all`: 5% of the window, or any after five rounds). ``check_interval=None``
    turns the thread off (then pass ``check_every`` to check on the hot path).
    The keyword defaults are :class:`~mlops_otel.DriftSettings`' (see :meth:`from_settings`).
    """

    store: StateStore
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True, repr=False)
    registry: object | None = attrs.field(default=None, kw_only=True, repr=False)
    window_size: int = attrs.field(default=_D.window_size.default, kw_only=True)
    reference_size: int | None = attrs.field(default=_D.reference_size.default, kw_only=True)
    threshold: float = attrs.field(default=_D.threshold.default, kw_only=True)
    clear_threshold: float | None = attrs.field(default=_D.clear_threshold.default, kw_only=True)
    min_samples: int | None = attrs.field(default=_D.min_samples.default, kw_only=True)
    check_every: int | None = attrs.field(default=_D.check_every.default, kw_only=True)
    check_interval: float | None = attrs.field(default=_D.check_interval.default, kw_only=True)
    alpha: float = attrs.field(default=_D.alpha.default, kw_only=True)
    warning_threshold: float = attrs.field(default=_D.warning_threshold.default, kw_only=True)
    confidence_drop: float = attrs.field(default=_D.confidence_drop.default, kw_only=True)
    alert_alpha: float = attrs.field(default=_D.alert_alpha.default, kw_only=True)
    max_features: int = attrs.field(default=_D.max_features.default, kw_only=True)
    feature_alpha: float = attrs.field(default=_D.feature_alpha.default, kw_only=True)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _detectors: dict[str, DriftDetector] = attrs.field(factory=dict, init=False, repr=False)
    _worker: PeriodicWorker[DriftMonitor] | None = attrs.field(default=None, init=False, repr=False)
    _checked_at: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)
    _skipped: dict[str, int] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.check_interval is not None and not 0 < self.check_interval < float("inf"):
            raise InvalidValueError("check_interval", "a positive number of seconds or None", self.check_interval)
        # Fail at construction, not at the first request, when a default is invalid.
        self._create("probe", "probe", self.window_size)
        if self.check_interval is not None:
            # Holds the monitor weakly (a monitor dropped without close() stops checking); a failed
            # round is counted as a fault (check_all already survives each detector's failure).
            self._worker = PeriodicWorker(self, DriftMonitor.check_all, name="mlops-otel-drift-check",
                                          interval=self.check_interval,
                                          on_error=fault_hook(self, _telemetry_of, "drift.check"))
        after_fork_in_child(self, DriftMonitor._after_fork)

    @classmethod
    def from_settings(cls, store: StateStore, settings: DriftSettings | None = None, *,
                      telemetry: Telemetry | None = None, registry: object | None = None) -> DriftMonitor:
        """A monitor whose detector defaults are *settings* (default: ``DriftSettings()``)."""
        options = (settings if settings is not None else DriftSettings()).monitor_options()
        return cls(store, telemetry=telemetry, registry=registry, **options)

    def _after_fork(self) -> None:
        # Threads do not survive a fork: the child starts its own checker for the detectors it
        # inherited (a pre-fork server creates them before forking its workers).
        self._lock = threading.Lock()
        self._checked_at = {}
        self._skipped = {}
        if self._worker is not None:
            self._worker.after_fork()
        if self._detectors:
            self._ensure_checker()

    def _ensure_checker(self) -> None:
        worker = self._worker
        if worker is not None and not worker.started:
            worker.start()

    def check_all(self) -> None:
        """Run the local check of every detector with enough new samples; deliver the others' samples.

        A detector is checked when it received at least :data:`CHECK_FRACTION` of its window since
        its last check (fewer new samples move the KS distance by at most that
        fraction), when it has no reference yet, or when it has new samples and its last check is
        :data:`MAX_SKIPPED_ROUNDS` rounds old. Every round delivers every detector's pending samples
        to the store, as a check would (#16: the checks were most of this thread's CPU).
        """
        for key, detector in self.detectors().items():
            seen = detector.accepted_samples
            last = self._checked_at.get(key)
            if seen == last:
                continue
            if last is not None and seen - last < max(1, int(detector.window_size * CHECK_FRACTION)):
                skipped = self._skipped.get(key, 0) + 1
                if skipped < MAX_SKIPPED_ROUNDS and detector.has_reference:
                    self._skipped[key] = skipped
                    detector.deliver_pending()
                    continue
            self._checked_at[key] = seen
            self._skipped[key] = 0
            try:
                detector.run_periodic_check()
            except Exception as exc:  # the checker thread must survive any one detector
                log.warning("mlops-otel drift: check of %s failed: %r", key, exc)

    def _create(self, model_type: str, version: str, window_size: int) -> DriftDetector:
        return DriftDetector(
            model_type, version, store=self.store, telemetry=self.telemetry, registry=self.registry,
            window_size=window_size, reference_size=self.reference_size, threshold=self.threshold,
            clear_threshold=self.clear_threshold, min_samples=self._min_samples(window_size),
            check_every=self.check_every, alpha=self.alpha, warning_threshold=self.warning_threshold,
            confidence_drop=self.confidence_drop, background_checks=self.check_interval is not None,
            alert_alpha=self.alert_alpha, max_features=self.max_features, feature_alpha=self.feature_alpha,
        )

    def _min_samples(self, window_size: int) -> int | None:
        if self.min_samples is None:
            return None
        return min(self.min_samples, window_size)

    def get_detector(self, model_type: str, version: str, *, window_size: int | None = None) -> DriftDetector:
        """Return the detector of *version* of *model_type*, creating it on first use.

        *window_size* applies when the detector is created (default: the
        monitor's); asking an existing detector for a different size raises
        :class:`ValueError` rather than silently ignoring it.
        """
        key = detector_key(model_type, version)
        detector = self._detectors.get(key)
        if detector is None:
            with self._lock:
                detector = self._detectors.get(key)
                if detector is None:
                    detector = self._create(model_type, version,
                                            self.window_size if window_size is None else window_size)
                    self._detectors[key] = detector
                    self._ensure_checker()
        if window_size is not None and window_size != detector.window_size:
            raise ValueError(f"window_size of the existing detector {key!r} is {detector.window_size}, "
                             f"got {window_size!r}")
        return detector

    def detectors(self) -> Mapping[str, DriftDetector]:
        """A read-only snapshot of every detector, keyed ``"<model_type>:<version>"``."""
        with self._lock:
            return types.MappingProxyType(dict(self._detectors))

    def refresh(self) -> dict[str, DriftReport]:
        """Compute every detector's shared report (and so its gauges), e.g. before a scrape.

        A detector whose store read fails is logged and left out; this never raises.
        """
        reports: dict[str, DriftReport] = {}
        for key, detector in sorted(self.detectors().items()):
            try:
                reports[key] = detector.get_drift_report()
            except Exception as exc:
                log.warning("mlops-otel drift: report of %s failed: %r", key, exc)
        return reports

    def close(self) -> None:
        """Stop the checker and deliver every detector's pending samples. Idempotent.

        The store is closed by its owner.
        """
        if self._worker is not None:
            self._worker.stop()
        for detector in self.detectors().values():
            detector.close()

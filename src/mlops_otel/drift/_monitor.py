"""The owner of every drift detector of a process."""

from __future__ import annotations

import logging
import threading
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from ..stores import StateStore
from ._detector import DriftDetector, DriftReport

if TYPE_CHECKING:
    from ..telemetry import Telemetry

__all__ = ["DriftMonitor"]

log = logging.getLogger("mlops_otel.drift")


@attrs.define(eq=False)
class DriftMonitor:
    """Creates, keeps and closes the :class:`DriftDetector` of each model version.

    Every detector shares the monitor's *store*, *telemetry* and *registry*;
    the other keyword arguments are the defaults of new detectors (see
    :class:`DriftDetector`). ``mlops_otel.get_drift_detector`` and
    ``mlops_otel.drift_detectors`` are this API on the default runtime's monitor.
    """

    store: StateStore
    telemetry: Telemetry | None = attrs.field(default=None, kw_only=True, repr=False)
    registry: object | None = attrs.field(default=None, kw_only=True, repr=False)
    window_size: int = attrs.field(default=1000, kw_only=True)
    reference_size: int | None = attrs.field(default=None, kw_only=True)
    threshold: float = attrs.field(default=0.3, kw_only=True)
    clear_threshold: float | None = attrs.field(default=None, kw_only=True)
    min_samples: int | None = attrs.field(default=None, kw_only=True)
    check_every: int | None = attrs.field(default=100, kw_only=True)
    alpha: float = attrs.field(default=0.01, kw_only=True)
    warning_threshold: float = attrs.field(default=0.1, kw_only=True)
    confidence_drop: float = attrs.field(default=0.05, kw_only=True)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _detectors: dict[str, DriftDetector] = attrs.field(factory=dict, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Fail at construction, not at the first request, when a default is invalid.
        self._create("probe", "probe", self.window_size)

    def _create(self, model_type: str, version: str, window_size: int) -> DriftDetector:
        return DriftDetector(
            model_type, version, store=self.store, telemetry=self.telemetry, registry=self.registry,
            window_size=window_size, reference_size=self.reference_size, threshold=self.threshold,
            clear_threshold=self.clear_threshold, min_samples=self._min_samples(window_size),
            check_every=self.check_every, alpha=self.alpha, warning_threshold=self.warning_threshold,
            confidence_drop=self.confidence_drop,
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
        key = f"{model_type}:{version}"
        detector = self._detectors.get(key)
        if detector is None:
            with self._lock:
                detector = self._detectors.get(key)
                if detector is None:
                    detector = self._create(model_type, version,
                                            self.window_size if window_size is None else window_size)
                    self._detectors[key] = detector
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
        """Deliver every detector's pending samples. Idempotent; the store is closed by its owner."""
        for detector in self.detectors().values():
            detector.close()

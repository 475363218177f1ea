"""OTel data model of aggregated snapshots, and the periodic OTLP push."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._worker import PeriodicWorker
from ..semconv import MetricKind
from ._aggregate import FamilySnapshot

__all__ = ["MetricsExporter", "PeriodicPusher", "to_metrics_data"]

_log = logging.getLogger("mlops_otel.telemetry")


class MetricsExporter(Protocol):
    """The one method mlops-otel needs of an OTel metric exporter (e.g. ``OTLPMetricExporter``)."""

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000) -> MetricExportResult:
        """Send *metrics_data*; return success or failure."""


def _attributes(keys: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    """The data point's attributes; an empty value means "not set" (e.g. ``error.type`` on success)."""
    return {k: v for k, v in zip(keys, values, strict=True) if v != ""}


def _metric(family: FamilySnapshot) -> Metric:
    spec = family.spec
    start, now = family.start_time_ns, family.time_ns
    data: Sum | Gauge | Histogram
    if spec.kind is MetricKind.HISTOGRAM:
        data = Histogram(
            data_points=[
                HistogramDataPoint(
                    attributes=_attributes(spec.labels, s.labels),
                    start_time_unix_nano=start,
                    time_unix_nano=now,
                    count=s.count,
                    sum=s.sum,
                    bucket_counts=list(s.bucket_counts),
                    explicit_bounds=list(spec.buckets),
                    min=s.min,
                    max=s.max,
                    exemplars=[
                        Exemplar({}, e.value, e.time_unix_nano, span_id=e.span_id, trace_id=e.trace_id)
                        for e in s.exemplars if e is not None
                    ],
                )
                for s in family.series
            ],
            aggregation_temporality=AggregationTemporality.CUMULATIVE,
        )
    else:
        points = [
            NumberDataPoint(
                attributes=_attributes(spec.labels, s.labels),
                start_time_unix_nano=start,
                time_unix_nano=now,
                value=s.value,
                exemplars=[],
            )
            for s in family.series
        ]
        if spec.kind is MetricKind.COUNTER:
            data = Sum(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                       is_monotonic=True)
        else:
            data = Gauge(data_points=points)
    return Metric(name=spec.name, description=spec.description, unit=spec.unit, data=data)


def to_metrics_data(
    families: list[FamilySnapshot], resource: Resource, scope: InstrumentationScope
) -> MetricsData:
    """Convert snapshots to the OTel SDK data model (cumulative temporality)."""
    return MetricsData(
        resource_metrics=[
            ResourceMetrics(
                resource=resource,
                scope_metrics=[ScopeMetrics(scope=scope, metrics=[_metric(f) for f in families],
                                            schema_url="")],
                schema_url="",
            )
        ]
    )


class PeriodicPusher:
    """A daemon thread that exports a snapshot every *interval* seconds.

    Export failures are counted by *on_error* and never propagate.
    """

    def __init__(
        self,
        exporter: MetricsExporter,
        collect: Callable[[], MetricsData],
        *,
        interval: float,
        timeout: float,
        on_error: Callable[[str, BaseException], None],
    ) -> None:
        self.exporter = exporter
        self._collect = collect
        self.interval = interval
        self.timeout = timeout
        self._on_error = on_error
        self._worker = PeriodicWorker(self, PeriodicPusher.push, name="mlops-otel-otlp", interval=interval,
                                      on_error=on_error)

    def ensure_started(self) -> None:
        """Start the thread if it is not running (again after a fork)."""
        self._worker.start()

    def after_fork(self) -> None:
        """Forget the parent's thread and lock (threads do not survive a fork)."""
        self._worker.after_fork()

    def push(self) -> bool:
        """Export one snapshot now; return whether the exporter reported success."""
        try:
            result = self.exporter.export(self._collect(), timeout_millis=self.timeout * 1000)
        except Exception as exc:  # an exporter must never take the service down
            self._on_error("otlp_export", exc)
            return False
        if result is not MetricExportResult.SUCCESS:
            self._on_error("otlp_export", RuntimeError(f"exporter returned {result}"))
            return False
        return True

    def shutdown(self) -> None:
        """Stop the thread after one final push."""
        self._worker.stop(timeout=self.timeout + self.interval)
        self.push()
        shutdown = getattr(self.exporter, "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as exc:
                self._on_error("otlp_shutdown", exc)

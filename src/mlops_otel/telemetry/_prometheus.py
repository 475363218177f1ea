"""Prometheus exposition of aggregated snapshots (pull, ``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

from ..semconv import MetricKind, prometheus_label
from ._aggregate import FamilySnapshot

__all__ = ["SnapshotCollector", "make_registry", "render", "render_openmetrics"]


class SnapshotCollector(Collector):
    """A prometheus_client collector that renders fresh snapshots on every scrape."""

    def __init__(self, snapshot: Callable[[], list[FamilySnapshot]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        for family in self._snapshot():
            yield to_prometheus(family)


def _le(bound: float) -> str:
    """Format a bucket bound as Prometheus clients do (``0.5``, ``1.0``, ``+Inf``)."""
    if bound == float("inf"):
        return "+Inf"
    return repr(float(bound))


def to_prometheus(family: FamilySnapshot) -> Metric:
    """Convert one family snapshot to a prometheus_client metric family."""
    spec = family.spec
    name = spec.prometheus_name
    keys = [prometheus_label(k) for k in spec.labels]  # gen_ai.request.model -> gen_ai_request_model
    if spec.kind is MetricKind.COUNTER:
        counter = CounterMetricFamily(name, spec.description, labels=keys)
        for s in family.series:
            counter.add_metric(list(s.labels), s.value)
        return counter
    if spec.kind is MetricKind.GAUGE:
        gauge = GaugeMetricFamily(name, spec.description, labels=keys)
        for s in family.series:
            gauge.add_metric(list(s.labels), s.value)
        return gauge
    histogram = HistogramMetricFamily(name, spec.description, labels=keys)
    bounds = [*spec.buckets, float("inf")]
    for s in family.series:
        cumulative = 0
        buckets: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
        exemplars = s.exemplars or (None,) * len(bounds)
        for bound, count, exemplar in zip(bounds, s.bucket_counts, exemplars, strict=True):
            cumulative += count
            if exemplar is None:
                buckets.append((_le(bound), float(cumulative)))
            else:
                # Only the OpenMetrics exposition carries exemplars; the classic text format ignores them.
                buckets.append((_le(bound), float(cumulative), Exemplar(
                    {"trace_id": exemplar.trace_id_hex, "span_id": exemplar.span_id_hex},
                    exemplar.value, exemplar.time_unix_nano / 1e9,
                )))
        histogram.add_metric(list(s.labels), buckets, s.sum)
    return histogram


def make_registry(snapshot: Callable[[], list[FamilySnapshot]]) -> CollectorRegistry:
    """Return a private registry (never the global default) serving *snapshot*."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """Render *registry* in the Prometheus text exposition format (no exemplars)."""
    return generate_latest(registry)


def render_openmetrics(registry: CollectorRegistry) -> bytes:
    """Render *registry* in the OpenMetrics text format, histogram exemplars included.

    ``metrics_app`` serves this to a scraper whose ``Accept`` asks for
    ``application/openmetrics-text`` (Prometheus does by default).
    """
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    text: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
    return text

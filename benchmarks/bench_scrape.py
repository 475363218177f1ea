"""``/metrics`` render time with 10 model versions x every seed family.

The same series are rendered by mlops-otel, by the OTel SDK's PrometheusMetricReader
(instruments on a MeterProvider) and by prometheus_client (its own metric objects).
"""

from __future__ import annotations

import sys

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from mlops_otel import semconv
from mlops_otel.semconv import MetricKind
from mlops_otel.telemetry import Telemetry

from ._harness import Row, row, time_per_call

BENCH = "scrape"
VERSIONS = [f"v2.{i}.0" for i in range(10)]


def _labels(spec: semconv.MetricSpec, version: str) -> tuple[str, ...]:
    values = {"model_version": version, "model_type": "gnn", "status": "success", "stage": f"stage-{version}",
              "error_type": "TimeoutError"}
    return tuple(values[k] for k in spec.labels)


def _fill_mlops() -> Telemetry:
    tel = Telemetry()
    for v in VERSIONS:
        for spec in semconv.SEED_METRICS:
            labels = _labels(spec, v)
            if spec.kind is MetricKind.HISTOGRAM:
                for x in spec.buckets:
                    tel.record(spec, labels, x)
            elif spec.kind is MetricKind.COUNTER:
                tel.add(spec, labels, 3)
            else:
                tel.set(spec, labels, 0.1)
    return tel


def _fill_otel() -> MeterProvider:
    reader = PrometheusMetricReader()
    views = [View(instrument_name=s.name, aggregation=ExplicitBucketHistogramAggregation(s.buckets))
             for s in semconv.SEED_METRICS if s.buckets]
    provider = MeterProvider(metric_readers=[reader], views=views)
    meter = provider.get_meter("bench")
    for spec in semconv.SEED_METRICS:
        if spec.kind is MetricKind.HISTOGRAM:
            h = meter.create_histogram(spec.name, spec.unit)
            for v in VERSIONS:
                for x in spec.buckets:
                    h.record(x, dict(zip(spec.labels, _labels(spec, v), strict=True)))
        elif spec.kind is MetricKind.COUNTER:
            c = meter.create_counter(spec.name, spec.unit)
            for v in VERSIONS:
                c.add(3, dict(zip(spec.labels, _labels(spec, v), strict=True)))
        else:
            g = meter.create_gauge(spec.name, spec.unit)
            for v in VERSIONS:
                g.set(0.1, dict(zip(spec.labels, _labels(spec, v), strict=True)))
    return provider


def _fill_prom() -> CollectorRegistry:
    reg = CollectorRegistry()
    for spec in semconv.SEED_METRICS:
        name = spec.prometheus_name
        if spec.kind is MetricKind.HISTOGRAM:
            h = Histogram(name, spec.description, list(spec.labels), buckets=list(spec.buckets), registry=reg)
            for v in VERSIONS:
                for x in spec.buckets:
                    h.labels(*_labels(spec, v)).observe(x)
        elif spec.kind is MetricKind.COUNTER:
            c = Counter(name, spec.description, list(spec.labels), registry=reg)
            for v in VERSIONS:
                c.labels(*_labels(spec, v)).inc(3)
        else:
            g = Gauge(name, spec.description, list(spec.labels), registry=reg)
            for v in VERSIONS:
                g.labels(*_labels(spec, v)).set(0.1)
    return reg


def run(quick: bool = False) -> list[Row]:
    n, repeat = (20, 3) if quick else (200, 7)
    tel = _fill_mlops()
    reg = _fill_prom()
    otel_provider = _fill_otel()
    # PrometheusMetricReader registers itself in prometheus_client's global REGISTRY.
    from prometheus_client import REGISTRY

    sizes = {
        "mlops-otel": len(tel.render_prometheus()),
        "OTel PrometheusMetricReader": len(generate_latest(REGISTRY)),
        "prometheus_client": len(generate_latest(reg)),
    }

    def ours(k: int) -> None:
        for _ in range(k):
            tel.render_prometheus()

    def otel(k: int) -> None:
        for _ in range(k):
            generate_latest(REGISTRY)

    def prom(k: int) -> None:
        for _ in range(k):
            generate_latest(reg)

    rows = [
        row(BENCH, name, time_per_call(fn, n, repeat), n, f"{sizes[name]} bytes per scrape")
        for name, fn in (("mlops-otel", ours), ("OTel PrometheusMetricReader", otel), ("prometheus_client", prom))
    ]
    otel_provider.shutdown()  # unregisters the reader's collector from the global registry
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r.case:30} {r.median_us / 1000:8.2f} ms/scrape ({r.note})")

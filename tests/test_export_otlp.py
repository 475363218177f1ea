"""OTLP export: the payload the SDK pushes carries exactly what the Prometheus exposition shows.

No Collector binary installs here, so the Prometheus-compatibility rules of the OTel
specification (what the Collector's ``prometheus`` and ``prometheusremotewrite``
exporters apply) are applied to the decoded payload in the test, twice: once as
written in the specification and once with opentelemetry-exporter-prometheus' own
mapping functions. Both must give exactly the names of the exposition.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_attribute, sanitize_full_name
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

import mlops_otel
from mlops_otel import semconv
from mlops_otel.metrics import record_error, record_gnn_metrics
from mlops_otel.telemetry import Telemetry

from .test_export_prometheus import Sample, parse, record_every_family, record_known_values, without_extras

# --------------------------------------------------------------- OTLP receiver


@attrs.define
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def decode(self) -> ExportMetricsServiceRequest:
        body = self.body
        encoding = self.headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        return request


@attrs.define
class OTLPReceiver:
    """A loopback OTLP/HTTP endpoint that records every request."""

    port: int
    requests: list[Received]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/metrics"

    def last(self) -> Received:
        assert self.requests, "the OTLP receiver got no request"
        return self.requests[-1]


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    received: list[Received] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            payload = ExportMetricsServiceResponse().SerializeToString()
            status = 200 if self.path == "/v1/metrics" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield OTLPReceiver(server.server_address[1], received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ------------------------------------------------- OTel -> Prometheus compatibility

# The unit table of the OTel "Prometheus and OpenMetrics compatibility" specification (the part
# the SDK's units need), written out here independently of semconv and of the exporter package.
SPEC_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "%": "percent", "1": ""}


def _kind(metric: Metric) -> str:
    return str(metric.WhichOneof("data"))


def spec_name(metric: Metric) -> str:
    """The Prometheus family name of *metric* per the specification, as written there."""
    import re

    name = re.sub(r"[^a-zA-Z0-9_:]+", "_", metric.name)
    unit = re.sub(r"\{[^}]*\}", "", metric.unit)
    unit = SPEC_UNITS.get(unit, unit)
    if unit and not name.endswith("_" + unit):
        name += "_" + unit
    if _kind(metric) == "sum" and metric.sum.is_monotonic and not name.endswith("_total"):
        name += "_total"
    return name


def exporter_name(metric: Metric) -> str:
    """The same with opentelemetry-exporter-prometheus' mapping functions (what its reader does)."""
    name = sanitize_full_name(metric.name)
    unit = map_unit(metric.unit)
    if unit and not name.endswith("_" + unit):
        name += "_" + unit
    if _kind(metric) == "sum" and metric.sum.is_monotonic and not name.endswith("_total"):
        name += "_total"
    return name


CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
PROMETHEUS_TYPE = {"sum": "counter", "gauge": "gauge", "histogram": "histogram"}


def _value(value: AnyValue) -> Any:
    return getattr(value, str(value.WhichOneof("value")))


def _labels(attributes: Any, **extra: str) -> frozenset[tuple[str, str]]:
    items = {sanitize_attribute(kv.key): str(_value(kv.value)) for kv in attributes}
    return frozenset({**items, **extra}.items())


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def as_prometheus(request: ExportMetricsServiceRequest) -> tuple[dict[str, str], set[Sample]]:
    """Translate an OTLP request to (family -> Prometheus type, samples) by the compatibility rules."""
    types: dict[str, str] = {}
    samples: set[Sample] = set()
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = _kind(metric)
                name = spec_name(metric)
                assert exporter_name(metric) == name, (metric.name, metric.unit)
                types[name] = PROMETHEUS_TYPE[kind]
                if kind == "histogram":
                    assert metric.histogram.aggregation_temporality == CUMULATIVE
                    for p in metric.histogram.data_points:
                        cumulative = 0
                        for bound, count in zip([*p.explicit_bounds, float("inf")], p.bucket_counts, strict=True):
                            cumulative += count
                            samples.add((f"{name}_bucket", _labels(p.attributes, le=_le(bound)), float(cumulative)))
                        assert cumulative == p.count
                        samples.add((f"{name}_count", _labels(p.attributes), float(p.count)))
                        samples.add((f"{name}_sum", _labels(p.attributes), p.sum))
                    continue
                data = metric.sum if kind == "sum" else metric.gauge
                if kind == "sum":
                    assert metric.sum.aggregation_temporality == CUMULATIVE
                for p in data.data_points:
                    value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                    samples.add((name, _labels(p.attributes), value))
    return types, samples


def normalized(exposition: tuple[dict[str, str], set[Sample]]) -> tuple[dict[str, str], set[Sample]]:
    """Normalise ``le`` spellings (``1000`` vs ``1000.0``) so only values are compared."""
    types, samples = exposition
    out = set()
    for name, labels, value in samples:
        fixed = {k: (_le(float(v)) if k == "le" else v) for k, v in labels}
        out.add((name, frozenset(fixed.items()), value))
    return types, out


def metrics_by_name(request: ExportMetricsServiceRequest) -> dict[str, Metric]:
    return {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}


def resource_attributes(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    (rm,) = request.resource_metrics
    return {kv.key: _value(kv.value) for kv in rm.resource.attributes}


def test_spec_translation_examples() -> None:
    # The translation used below, on the specification's own kind of examples.
    def metric(name: str, unit: str, kind: str) -> Metric:
        m = Metric(name=name, unit=unit)
        if kind == "counter":
            m.sum.is_monotonic = True
            m.sum.data_points.add()
        elif kind == "updown":
            m.sum.is_monotonic = False
            m.sum.data_points.add()
        else:
            m.histogram.data_points.add()
        return m

    assert spec_name(metric("http.server.duration", "s", "histogram")) == "http_server_duration_seconds"
    assert spec_name(metric("requests", "{request}", "counter")) == "requests_total"
    assert spec_name(metric("queue.size", "{item}", "updown")) == "queue_size"
    assert spec_name(metric("payload_bytes", "By", "histogram")) == "payload_bytes"
    for m in (metric("a.b", "ms", "counter"), metric("x", "{tok}", "histogram")):
        assert exporter_name(m) == spec_name(m)


# ------------------------------------------------------------------------ tests


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip], ids=["plain", "gzip"])
def test_otlp_http_payload_carries_the_metrics_of_the_exposition(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, compression: Compression
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "diagnosis-service")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=ci,service.version=1.2.3")
    exporter = OTLPMetricExporter(endpoint=otlp_receiver.endpoint, compression=compression)
    tel = Telemetry(exporter=exporter)
    try:
        record_known_values(tel)
        assert tel.force_flush()
        received = otlp_receiver.last()
        exposition = normalized(without_extras(*parse(tel.render_prometheus().decode())))
    finally:
        tel.close()

    assert received.path == "/v1/metrics"
    assert received.headers["content-type"] == "application/x-protobuf"
    if compression is Compression.Gzip:
        assert received.headers.get("content-encoding") == "gzip"
    request = received.decode()

    attributes = resource_attributes(request)
    assert attributes["service.name"] == "diagnosis-service"
    assert attributes["deployment.environment"] == "ci"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["telemetry.sdk.language"] == "python"
    (rm,) = request.resource_metrics
    assert [sm.scope.name for sm in rm.scope_metrics] == ["mlops_otel"]

    # Names, units, descriptions, types and bucket bounds are the semconv ones.
    metrics = metrics_by_name(request)
    assert set(metrics) == {spec.name for spec in semconv.SEED_METRICS}
    kinds = {semconv.MetricKind.COUNTER: "sum", semconv.MetricKind.GAUGE: "gauge",
             semconv.MetricKind.HISTOGRAM: "histogram"}
    for spec in semconv.SEED_METRICS:
        metric = metrics[spec.name]
        assert (metric.unit, metric.description, _kind(metric)) == (spec.unit, spec.description, kinds[spec.kind])
        if spec.kind is semconv.MetricKind.COUNTER:
            assert metric.sum.is_monotonic
        if spec.kind is semconv.MetricKind.HISTOGRAM:
            for point in metric.histogram.data_points:
                assert tuple(point.explicit_bounds) == spec.buckets
                assert len(point.bucket_counts) == len(spec.buckets) + 1
        # The compatibility rules turn the OTel name+unit+type into exactly the Prometheus name.
        assert spec_name(metric) == exporter_name(metric) == spec.prometheus_name

    # The same samples, value for value, as the Prometheus exposition of the same instance.
    assert as_prometheus(request) == exposition


def test_otlp_names_translate_to_the_exposition_names_for_every_family(otlp_receiver: OTLPReceiver) -> None:
    tel = Telemetry(exporter=OTLPMetricExporter(endpoint=otlp_receiver.endpoint))
    try:
        record_every_family(tel)
        assert tel.force_flush()
        exposition = normalized(without_extras(*parse(tel.render_prometheus().decode())))
    finally:
        tel.close()
    translated = as_prometheus(otlp_receiver.last().decode())
    assert set(translated[0]) == {spec.prometheus_name for spec in semconv.ALL_METRICS}
    assert translated == exposition


def test_configure_honours_the_otel_exporter_environment(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OTEL_EXPORTER_OTLP_ENDPOINT is a base URL: the exporter appends /v1/metrics itself.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp_receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=diagnosis")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "configured-service")
    runtime = mlops_otel.configure(otlp=True)
    try:
        record_gnn_metrics("v2.2.0", inference_time_ms=30.0, anomaly_score=0.4, confidence=0.8)
        record_error("TimeoutError", "rag_generation")
        assert runtime.telemetry.force_flush()
    finally:
        mlops_otel.reset_default()
    received = otlp_receiver.last()
    assert received.path == "/v1/metrics"
    assert received.headers["x-tenant"] == "diagnosis"
    assert received.headers["content-encoding"] == "gzip"
    request = received.decode()
    assert resource_attributes(request)["service.name"] == "configured-service"
    types, samples = as_prometheus(request)
    assert {"gnn_inference_duration_seconds", "diagnosis_errors_total"} <= set(types)
    assert ("diagnosis_errors_total", frozenset({"error_type": "TimeoutError", "stage": "rag_generation"}.items()),
            1.0) in samples


def test_passthrough_delivers_the_same_values_through_the_users_meter_provider() -> None:
    memory = InMemoryMetricReader()
    registry = CollectorRegistry()
    prometheus = PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry)
    provider = MeterProvider(metric_readers=[memory, prometheus])
    try:
        tel = Telemetry(mode="passthrough", meter_provider=provider)
        record_known_values(tel)
        ours = normalized(without_extras(*parse(tel.render_prometheus().decode())))
        data = memory.get_metrics_data()
        assert data is not None
        through_sdk = as_prometheus(encode_metrics(data))
        otel_exposition = normalized(parse(generate_latest(registry).decode()))
    finally:
        provider.shutdown()
    # The user's MeterProvider aggregated the very same values (buckets from the advisory bounds).
    assert through_sdk == ours
    # And the OTel Prometheus exporter, translating our OTel names and units itself, produces the
    # same family names and samples as our own exposition: the OTel names and units are right.
    assert set(otel_exposition[0]) == set(ours[0])
    assert otel_exposition == ours

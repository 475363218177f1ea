"""Through a real OpenTelemetry Collector into Prometheus: every seed family, its traces and exemplars.

The example service (under ``opentelemetry-instrument`` for its traces) pushes OTLP/HTTP to
the test Collector (collector/, built by scripts/build-collector.sh) running the shipped
``examples/deploy/otel-collector*.yaml`` unchanged, its ports set through their ``${env:...}``
variables. Then (a) a real Prometheus scrapes the Collector's Prometheus exporter, or (b) the
Collector remote-writes into a real Prometheus. PromQL must give every seed family with the
SDK's exact names, label keys, bucket boundaries and values (compared with the SDK's own
``/metrics`` after the same traffic); the Collector forwards the traces over OTLP/HTTP to a
sink; Prometheus returns the histogram exemplars, whose ids are those of the forwarded spans.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from examples.diagnosis_service.rag import CORPUS_ID, RAG_MODEL_VERSION, RAG_PROVIDER
from mlops_otel import semconv
from mlops_otel.deploy import prometheus_config, to_yaml

from .services import (
    OtlpTraceSink,
    PrometheusServer,
    collector_binary,
    otel_collector,
    otlp_trace_sink,
    prometheus_server,
    span_attributes,
    uvicorn_process,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "deploy"
SERVICE_NAME = "diagnosis-e2e"
# 600 requests fill the drift detector's min_samples, so model_drift_score is published too.
REQUESTS = 600
# The seed's families and, beside them, the GenAI ones of the default (v1.41.0) shape.
FAMILIES = semconv.SEED_METRICS + semconv.GEN_AI_METRICS_DEFAULT
T = TypeVar("T")


def _wait(check: Callable[[], T], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


# ------------------------------------------------------------------ the built binary
@pytest.mark.parametrize("name", ["otel-collector.yaml", "otel-collector-remote-write.yaml"])
def test_the_built_collector_validates_the_shipped_config(name: str) -> None:
    binary = collector_binary()
    ok = subprocess.run([binary, "validate", "--config", f"file:{EXAMPLES / name}"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_validate_rejects_a_config_the_collector_cannot_run(tmp_path: Path) -> None:
    # The check above can fail: an exporter the distribution lacks is an error.
    config = yaml.safe_load((EXAMPLES / "otel-collector.yaml").read_text())
    config["exporters"]["kafka"] = {}
    config["service"]["pipelines"]["metrics"]["exporters"].append("kafka")
    path = tmp_path / "bad.yaml"
    path.write_text(to_yaml(config))
    bad = subprocess.run([collector_binary(), "validate", "--config", f"file:{path}"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "kafka" in bad.stdout + bad.stderr


# ------------------------------------------------------------------ end to end
def _sdk_samples(text: str, families: tuple[semconv.MetricSpec, ...] = FAMILIES) -> dict[Any, float]:
    """The families' samples of a classic ``/metrics`` text: (name, labels) -> value.

    An empty label value (``error.type`` on success) is no label, as Prometheus stores it.
    """
    wanted = {spec.prometheus_name for spec in families}
    out = {}
    for family in text_string_to_metric_families(text):
        base = family.name if family.name in wanted else family.name + "_total"
        if base not in wanted:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out[(sample.name, frozenset((k, v) for k, v in sample.labels.items() if v))] = sample.value
    return out


def _prom_samples(prom: PrometheusServer, families: tuple[semconv.MetricSpec, ...]) -> dict[Any, float]:
    """The same samples as PromQL returns them, without the job/instance the Collector derives."""
    out = {}
    for spec in families:
        name = spec.prometheus_name
        names = [f"{name}_bucket", f"{name}_sum", f"{name}_count"] \
            if spec.kind is semconv.MetricKind.HISTOGRAM else [name]
        for series_name in names:
            for row in prom.query(series_name):
                labels = {k: v for k, v in row["metric"].items() if k not in ("__name__", "job", "instance")}
                out[(series_name, frozenset(labels.items()))] = float(row["value"][1])
    return out


def _normal_le(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[Any, float]:
    """Bucket bounds as numbers (``1`` and ``1.0`` are the same boundary)."""
    out = {}
    for (name, labels), value in samples.items():
        fixed = frozenset((k, repr(float(v)) if k == "le" else v) for k, v in labels)
        out[(name, fixed)] = value
    return out


def _drive_traffic(url: str) -> str:
    """Seeded traffic (plus one unknown unit, an error) through the service; return its ``/metrics``."""
    with httpx.Client(base_url=url, timeout=30) as client:
        equipment = client.get("/equipment").json()
        for i in range(REQUESTS):
            client.post("/diagnosis/create", json={"equipment_id": equipment[i % len(equipment)],
                                                   "user_id": f"user-{i}"})
        assert client.post("/diagnosis/create", json={"equipment_id": "NOPE-404"}).status_code == 404

        def metrics() -> str:
            return client.get("/metrics", headers={"Accept": "text/plain"}).text

        # The drift monitor publishes model_drift_score from its 1 s background check; once it
        # has seen every sample the compared families no longer change (other gauges, such as
        # the views' ages, always do, and are not compared).
        drift = semconv.MODEL_DRIFT_SCORE.prometheus_name
        _wait(lambda: f"\n{drift}{{" in metrics(), "the drift score in /metrics")
        previous, current = "", metrics()
        deadline = time.monotonic() + 60
        while _sdk_samples(current, FAMILIES + semconv.GEN_AI_METRICS_LATEST) \
                != _sdk_samples(previous, FAMILIES + semconv.GEN_AI_METRICS_LATEST):
            assert time.monotonic() < deadline, "the service's /metrics never settled"
            time.sleep(2.5)
            previous, current = current, metrics()
        return current


def _run_service(collector_otlp_http: str, extra_env: dict[str, str] | None = None) -> str:
    """Run the example service pushing to the Collector; return its ``/metrics`` after the traffic.

    The service is stopped before returning: its runtime pushes a final OTLP export on close,
    and the tracer provider flushes its spans, so the Collector has everything /metrics had.
    """
    agent = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert agent is not None, "opentelemetry-instrument is installed with the dev extra"
    env = {
        "MLOPS_OTEL_STORE_URL": "memory://",
        "MLOPS_OTEL_OTLP": "1",
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector_otlp_http}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        # ~8 spans per request (with the HTTP server's): a queue that never drops one under load.
        "OTEL_BSP_MAX_QUEUE_SIZE": "50000",
        **(extra_env or {}),
    }
    with uvicorn_process("examples.diagnosis_service.app:app", env=env, prefix=(agent,)) as (url, _proc):
        return _drive_traffic(url)


def _check_families(
    prom: PrometheusServer, sdk: dict[Any, float], families: tuple[semconv.MetricSpec, ...] = FAMILIES
) -> None:
    """Every seed family in Prometheus with the SDK's names, label keys, buckets and values."""
    requests = semconv.DIAGNOSIS_REQUESTS.prometheus_name
    _wait(lambda: prom.query(f"sum({requests})")
          and float(prom.query(f"sum({requests})")[0]["value"][1]) == REQUESTS + 1, "every request in Prometheus")
    got = _prom_samples(prom, families)
    for spec in families:
        name = spec.prometheus_name
        series = name + "_bucket" if spec.kind is semconv.MetricKind.HISTOGRAM else name
        keys = {k for (n, labels) in got if n == series for k, _ in labels}
        expected_keys = {semconv.prometheus_label(k) for k in spec.labels} \
            | ({"le"} if spec.kind is semconv.MetricKind.HISTOGRAM else set())
        # error.type is set on failed GenAI operations only; the example's RAG never fails.
        optional = {semconv.prometheus_label(semconv.ATTR_OTEL_ERROR_TYPE)}
        assert keys <= expected_keys, f"{series}: {keys} != {expected_keys}"
        assert expected_keys - keys <= optional, f"{series}: {keys} != {expected_keys}"
        if spec.kind is semconv.MetricKind.HISTOGRAM:
            bounds = sorted({float(v) for (n, labels) in got if n == series for k, v in labels if k == "le"})
            assert bounds == [*spec.buckets, math.inf], series
    assert _normal_le(got) == _normal_le(sdk)


def _all_spans(sink: OtlpTraceSink) -> list[tuple[dict[str, Any], Any]]:
    """The sink's spans once every request's spans arrived (the Collector sends them in batches)."""
    def complete() -> list[tuple[dict[str, Any], Any]]:
        spans = sink.spans()
        names = [s.name for r, s in spans if r.get("service.name") == SERVICE_NAME]
        done = names.count(semconv.SPAN_DIAGNOSIS) >= REQUESTS + 1 \
            and names.count(semconv.SPAN_GNN_INFERENCE) >= REQUESTS
        return spans if done else []

    return _wait(complete, "every request's spans at the trace sink")


def _check_traces(spans: list[tuple[dict[str, Any], Any]]) -> set[str]:
    """The seed's spans with their attributes reached the sink; return their trace ids (hex)."""
    ours = [(r, s) for r, s in spans if r.get("service.name") == SERVICE_NAME]
    names = {s.name for _, s in ours}
    assert {semconv.SPAN_DIAGNOSIS, semconv.SPAN_GNN_INFERENCE, semconv.SPAN_RAG_GENERATION} <= names, names
    gnn_spans = [s for _, s in ours if s.name == semconv.SPAN_GNN_INFERENCE]
    assert len(gnn_spans) == REQUESTS
    gnn = [span_attributes(s) for s in gnn_spans]
    assert all(a[semconv.SPAN_ATTR_STAGE] == semconv.STAGE_GNN_INFERENCE for a in gnn)
    # A prediction that failed (the simulated ModelError) has an ERROR status and no scores.
    failed = [s for s in gnn_spans if s.status.code == s.status.STATUS_CODE_ERROR]
    scored = [span_attributes(s) for s in gnn_spans if s.status.code != s.status.STATUS_CODE_ERROR]
    assert len(scored) > len(failed)
    assert all(0.0 <= a[semconv.SPAN_ATTR_ANOMALY_SCORE] <= 1.0 for a in scored)
    assert {a[semconv.SPAN_ATTR_MODEL_VERSION] for a in gnn} <= {"v2.1.0", "v2.0.0"}
    rag = [span_attributes(s) for _, s in ours if s.name == semconv.SPAN_RAG_GENERATION]
    assert rag
    assert all(a[semconv.ATTR_GEN_AI_INPUT_TOKENS] > 0 and a[semconv.ATTR_GEN_AI_OUTPUT_TOKENS] > 0 for a in rag)
    # The GenAI spans beside the seed's rag.generation: in-process model, so kind INTERNAL.
    generation = [s for _, s in ours if s.name == f"text_completion {RAG_MODEL_VERSION}"]
    assert len(generation) == len(rag)
    assert all(s.kind == s.SPAN_KIND_INTERNAL for s in generation)
    assert all(span_attributes(s)[semconv.ATTR_GEN_AI_PROVIDER_NAME] == RAG_PROVIDER for s in generation)
    assert all(span_attributes(s)[semconv.ATTR_GEN_AI_OUTPUT_TOKENS] > 0 for s in generation)
    retrieval = [span_attributes(s) for _, s in ours if s.name == f"retrieval {CORPUS_ID}"]
    assert len(retrieval) == len(rag)
    assert all(a[semconv.ATTR_GEN_AI_DATA_SOURCE_ID] == CORPUS_ID for a in retrieval)
    requests = [span_attributes(s) for _, s in ours if s.name == semconv.SPAN_DIAGNOSIS]
    assert len(requests) == REQUESTS + 1
    assert all(a[semconv.SPAN_ATTR_REQUEST_NAME] == "create_diagnosis" for a in requests)
    return {s.trace_id.hex() for _, s in ours}


def _check_exemplars(prom: PrometheusServer, trace_ids: set[str]) -> None:
    """Prometheus returns bucket exemplars whose trace ids are those of the forwarded spans."""
    now = time.time()
    for spec in (semconv.GNN_INFERENCE_DURATION, semconv.RAG_GENERATION_DURATION, semconv.DIAGNOSIS_DURATION,
                 semconv.GEN_AI_CLIENT_TOKEN_USAGE):
        name = f"{spec.prometheus_name}_bucket"
        result = _wait(lambda name=name: prom.api("query_exemplars", query=name,
                                                  start=str(now - 600), end=str(time.time() + 60)),
                       f"exemplars of {name}")
        exemplars = [e for group in result for e in group["exemplars"]]
        assert exemplars, name
        for exemplar in exemplars:
            assert exemplar["labels"]["trace_id"] in trace_ids, exemplar
            assert len(exemplar["labels"]["span_id"]) == 16
        # An exemplar sits in a bucket its value belongs to.
        for group in result:
            le = float(group["seriesLabels"]["le"])
            assert all(float(e["value"]) <= le for e in group["exemplars"]), group


_PROMETHEUS_FLAGS = ("--enable-feature=exemplar-storage",)


@contextlib.contextmanager
def _collector_scraped(*prometheus_args: str) -> Iterator[tuple[OtlpTraceSink, Any, PrometheusServer]]:
    """The shipped Collector config with a trace sink, scraped every second by a real Prometheus."""
    config = EXAMPLES / "otel-collector.yaml"
    with otlp_trace_sink() as sink, \
            otel_collector(config, {"OTELCOL_TRACES_ENDPOINT": sink.url}) as collector:
        target = collector.endpoint("OTELCOL_PROMETHEUS_ENDPOINT")
        scrape = prometheus_config(targets=[target], job_name="otel-collector", honor_labels=True,
                                   scrape_interval="1s", evaluation_interval="1s", rule_files=())
        with prometheus_server(to_yaml(scrape), extra_args=prometheus_args) as prom:
            yield sink, collector, prom


def _check_service_through(collector: Any, sink: OtlpTraceSink, prom: PrometheusServer) -> None:
    """Run the example service against *collector*: every family reaches *prom* with the SDK's values,
    under the service's job (job/instance come from service.name/service.instance.id, kept by
    honor_labels or by remote write), its traces reach *sink*, and the exemplars link to them."""
    sdk = _sdk_samples(_run_service(collector.endpoint("OTELCOL_OTLP_HTTP_ENDPOINT")))
    _check_families(prom, sdk)
    assert {r["metric"]["job"] for r in prom.query(semconv.DIAGNOSIS_REQUESTS.prometheus_name)} == {SERVICE_NAME}
    trace_ids = _check_traces(_all_spans(sink))
    _check_exemplars(prom, trace_ids)


def test_prometheus_scrapes_the_collector_exporter() -> None:
    with _collector_scraped(*_PROMETHEUS_FLAGS) as (sink, collector, prom):
        _check_service_through(collector, sink, prom)


def test_the_collector_remote_writes_into_prometheus() -> None:
    config = EXAMPLES / "otel-collector-remote-write.yaml"
    empty = prometheus_config(targets=["127.0.0.1:9"], scrape_interval="1h", rule_files=())
    empty["scrape_configs"] = []
    flags = ("--web.enable-remote-write-receiver", *_PROMETHEUS_FLAGS)
    with prometheus_server(to_yaml(empty), extra_args=flags) as prom, otlp_trace_sink() as sink, \
            otel_collector(config, {"OTELCOL_TRACES_ENDPOINT": sink.url,
                                    "OTELCOL_REMOTE_WRITE_ENDPOINT": f"{prom.url}/api/v1/write"}) as collector:
        _check_service_through(collector, sink, prom)


def test_the_latest_experimental_genai_shape_through_the_collector() -> None:
    # OTEL_SEMCONV_STABILITY_OPT_IN switches the service to the latest experimental GenAI names;
    # they too reach Prometheus unchanged (counters with _total, histograms without a unit suffix).
    latest = (*semconv.SEED_METRICS, *semconv.GEN_AI_METRICS_LATEST)
    with _collector_scraped() as (_sink, collector, prom):
        opt_in = {semconv.ENV_SEMCONV_STABILITY_OPT_IN: semconv.GEN_AI_LATEST_EXPERIMENTAL}
        text = _run_service(collector.endpoint("OTELCOL_OTLP_HTTP_ENDPOINT"), opt_in)
        assert semconv.GEN_AI_CLIENT_TOKEN_USAGE.prometheus_name not in text
        _check_families(prom, _sdk_samples(text, latest), latest)
        assert not prom.query(f"{semconv.GEN_AI_CLIENT_TOKEN_USAGE.prometheus_name}_count")
        counter = semconv.GEN_AI_USAGE_OUTPUT_TOKENS.prometheus_name
        (row,) = prom.query(counter)
        assert counter.endswith("_total")
        assert row["metric"][semconv.prometheus_label(semconv.ATTR_GEN_AI_TOKEN_MODALITY)] == "text"


def test_the_default_http_metrics_reach_prometheus_with_the_stable_names() -> None:
    # instrument_app's default HTTP layer (#16) records through the OTel MeterProvider: here the
    # distro's, pushing OTLP to the Collector (OTel's own FastAPI instrumentor disabled, so the light
    # layer is the one in place). Prometheus must get exactly semconv's names, labels and buckets.
    duration, active = semconv.HTTP_SERVER_REQUEST_DURATION, semconv.HTTP_SERVER_ACTIVE_REQUESTS
    label = semconv.prometheus_label
    with _collector_scraped() as (_sink, collector, prom):
        agent = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
        assert agent is not None, "opentelemetry-instrument is installed with the dev extra"
        env = {
            "MLOPS_OTEL_STORE_URL": "memory://",
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fastapi",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.endpoint('OTELCOL_OTLP_HTTP_ENDPOINT')}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_LOGS_EXPORTER": "none",
        }
        with uvicorn_process("examples.diagnosis_service.app:app", env=env, prefix=(agent,)) as (url, _proc):
            with httpx.Client(base_url=url, timeout=30) as client:
                equipment = client.get("/equipment").json()
                for i in range(10):
                    client.post("/diagnosis/create", json={"equipment_id": equipment[i % len(equipment)],
                                                           "user_id": f"user-{i}"})
                assert client.post("/diagnosis/create", json={"equipment_id": "NOPE-404"}).status_code == 404
            route = f'{label(semconv.ATTR_HTTP_ROUTE)}="/diagnosis/create"'
            count = f"{duration.prometheus_name}_count{{{route}}}"
            # 11, not 22: one HTTP layer (FastAPI's own telemetry, if any, stood down for ours)
            rows = _wait(lambda: [r for r in prom.query(f"sum({count})") if float(r["value"][1]) == 11],
                         "the 11 POST /diagnosis/create requests in Prometheus")
            assert rows
            time.sleep(1.5)  # three more pushes: a second layer's samples would show by now
            assert float(prom.query(f"sum({count})")[0]["value"][1]) == 11
            series = prom.query(f"{duration.prometheus_name}_bucket{{{route}}}")
            gauges = prom.query(active.prometheus_name)
            assert not prom.query("http_server_duration_milliseconds_count")  # the old name is gone
    keys = {k for s in series for k in s["metric"]} - {"__name__", "job", "instance", "le"}
    # What the Collector adds from the resource and scope (otel_scope_*) aside, the spec's labels only.
    assert {label(k) for k in duration.labels} - {label(semconv.ATTR_OTEL_ERROR_TYPE)} \
        <= keys <= {label(k) for k in duration.labels} | {k for k in keys if k.startswith("otel_scope_")}
    assert {float(s["metric"]["le"]) for s in series} == {*duration.buckets, float("inf")}
    assert {s["metric"][label(semconv.ATTR_HTTP_RESPONSE_STATUS_CODE)] for s in series} >= {"200", "404"}
    assert gauges
    assert all(g["metric"][label(semconv.ATTR_HTTP_REQUEST_METHOD)] for g in gauges)

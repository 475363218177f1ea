"""Hot-path cost of recording one diagnosis request's measurements.

Per request the diagnosis service records 8 measurements: the request counter,
the request and GNN-stage durations, GNN latency / anomaly score / confidence,
RAG latency and tokens. The same 8 writes are timed side by side with

* mlops-otel (default aggregate mode), with no sampled span and inside one sampled span
  (every histogram write then also keeps its bucket's exemplar),
* prometheus_client with pre-bound children and with ``.labels()`` per write,
* OTel SDK instruments called directly (MeterProvider + a reader),
* an uninstrumented baseline (the loop alone).

Run: ``python -m benchmarks.bench_hotpath`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlops_otel import semconv
from mlops_otel.telemetry import Telemetry

MEASUREMENTS_PER_REQUEST = 8
VERSIONS = ("v2.1.0", "v2.2.0")


def _time(fn: Callable[[int], None], n: int, repeat: int) -> list[float]:
    """Seconds per request for *repeat* runs of *n* requests each."""
    fn(min(n, 1000))  # warm up caches and lazily created series
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(n)
        runs.append((time.perf_counter() - start) / n)
    return runs


def make_mlops() -> Callable[[int], None]:
    """No sampled span (the API's no-op tracer): no exemplar is kept."""
    return _mlops_loop(Telemetry())


def _mlops_loop(tel: Telemetry) -> Callable[[int], None]:
    add, record = tel.record_request, tel.record
    gnn, rag = tel.record_gnn_metrics, tel.record_rag_metrics
    stage = semconv.DIAGNOSIS_DURATION

    def run(n: int) -> None:
        for i in range(n):
            v = VERSIONS[i & 1]
            record(stage, ("gnn_inference",), 0.012)
            gnn(v, 12.0, 0.31, 0.93)
            rag(v, 850.0, 640)
            add("success", v, 0.9, "create_diagnosis")

    return run


def make_mlops_sampled() -> Callable[[int], None]:
    """The same writes inside one sampled span: every histogram write also keeps an exemplar."""
    from opentelemetry.sdk.trace import TracerProvider

    tel = Telemetry(tracer_provider=TracerProvider())  # always-on sampler, spans go nowhere
    inner = _mlops_loop(tel)

    def run(n: int) -> None:
        with tel.track_stage("bench"):  # the current sampled span of every write below
            inner(n)

    return run


def _prom_families() -> tuple[Counter, Histogram, Histogram, Histogram, Histogram, Histogram, Histogram]:
    reg = CollectorRegistry()

    def h(spec: semconv.MetricSpec) -> Histogram:
        return Histogram(spec.prometheus_name, spec.description, list(spec.labels),
                         buckets=list(spec.buckets), registry=reg)

    requests = Counter("diagnosis_requests", "", ["status", "model_version"], registry=reg)
    return (requests, h(semconv.DIAGNOSIS_DURATION), h(semconv.GNN_INFERENCE_DURATION),
            h(semconv.GNN_ANOMALY_SCORE), h(semconv.GNN_CONFIDENCE), h(semconv.RAG_GENERATION_DURATION),
            h(semconv.RAG_TOKENS_USED))


def make_prom_labels() -> Callable[[int], None]:
    req, dur, gdur, score, conf, rdur, tok = _prom_families()

    def run(n: int) -> None:
        for i in range(n):
            v = VERSIONS[i & 1]
            dur.labels("gnn_inference").observe(0.012)
            gdur.labels(v).observe(0.012)
            score.labels(v).observe(0.31)
            conf.labels(v).observe(0.93)
            rdur.labels(v).observe(0.85)
            tok.labels(v).observe(640)
            req.labels("success", v).inc()
            dur.labels("create_diagnosis").observe(0.9)

    return run


def make_prom_bound() -> Callable[[int], None]:
    req, dur, gdur, score, conf, rdur, tok = _prom_families()
    bound = {
        v: (req.labels("success", v), gdur.labels(v), score.labels(v), conf.labels(v), rdur.labels(v),
            tok.labels(v))
        for v in VERSIONS
    }
    stage_gnn, stage_req = dur.labels("gnn_inference"), dur.labels("create_diagnosis")

    def run(n: int) -> None:
        for i in range(n):
            r, g, s, c, rd, t = bound[VERSIONS[i & 1]]
            stage_gnn.observe(0.012)
            g.observe(0.012)
            s.observe(0.31)
            c.observe(0.93)
            rd.observe(0.85)
            t.observe(640)
            r.inc()
            stage_req.observe(0.9)

    return run


def make_otel() -> Callable[[int], None]:
    views = [View(instrument_name=s.name, aggregation=ExplicitBucketHistogramAggregation(s.buckets))
             for s in semconv.SEED_METRICS if s.buckets]
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=views)
    meter = provider.get_meter("bench")
    req = meter.create_counter("diagnosis_requests")
    dur, gdur, score, conf, rdur, tok = (
        meter.create_histogram(s.name, s.unit) for s in (
            semconv.DIAGNOSIS_DURATION, semconv.GNN_INFERENCE_DURATION, semconv.GNN_ANOMALY_SCORE,
            semconv.GNN_CONFIDENCE, semconv.RAG_GENERATION_DURATION, semconv.RAG_TOKENS_USED))
    attrs = {v: {"model_version": v} for v in VERSIONS}
    req_attrs = {v: {"status": "success", "model_version": v} for v in VERSIONS}
    s_gnn, s_req = {"stage": "gnn_inference"}, {"stage": "create_diagnosis"}

    def run(n: int) -> None:
        for i in range(n):
            v = VERSIONS[i & 1]
            a = attrs[v]
            dur.record(0.012, s_gnn)
            gdur.record(0.012, a)
            score.record(0.31, a)
            conf.record(0.93, a)
            rdur.record(0.85, a)
            tok.record(640, a)
            req.add(1, req_attrs[v])
            dur.record(0.9, s_req)

    return run


def make_baseline() -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            _ = VERSIONS[i & 1]

    return run


CASES: dict[str, Callable[[], Callable[[int], None]]] = {
    "uninstrumented": make_baseline,
    "mlops-otel (aggregate)": make_mlops,
    "mlops-otel (aggregate, sampled span: exemplars)": make_mlops_sampled,
    "prometheus_client pre-bound": make_prom_bound,
    "prometheus_client .labels()": make_prom_labels,
    "OTel SDK instruments": make_otel,
}


@attrs.frozen
class Row:
    """One case's timing: microseconds per request (median, min, max) and net of the baseline."""

    case: str
    median_us: float
    min_us: float
    max_us: float
    net_us: float
    n: int
    repeat: int


def run(quick: bool = False) -> list[Row]:
    """Time every case side by side in this process."""
    n, repeat = (2_000, 3) if quick else (20_000, 9)
    timed = {name: _time(factory(), n, repeat) for name, factory in CASES.items()}
    base = statistics.median(timed["uninstrumented"])
    return [
        Row(name, statistics.median(t) * 1e6, min(t) * 1e6, max(t) * 1e6,
            (statistics.median(t) - base) * 1e6, n, repeat)
        for name, t in timed.items()
    ]


def ratios(rows: list[Row]) -> dict[str, float]:
    """The two goals of issue 2 as ratios of net per-request cost (baseline loop subtracted)."""
    net = {r.case: r.net_us for r in rows}
    ours = net["mlops-otel (aggregate)"]
    return {
        "prometheus_client pre-bound / mlops-otel": net["prometheus_client pre-bound"] / ours,
        "OTel SDK / mlops-otel": net["OTel SDK instruments"] / ours,
    }


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The issue-2 goals as ratios of net per-request cost, measured in this run."""
    net = {str(r["case"]): float(r["net_us"]) for r in rows}
    ours = net["mlops-otel (aggregate)"]
    prom, otel = net["prometheus_client pre-bound"] / ours, net["OTel SDK instruments"] / ours
    return [
        f"- prometheus_client pre-bound costs **{prom:.2f}x** mlops-otel's hot path "
        f"(goal: >= 1.0x, i.e. mlops-otel no slower): {'met' if prom >= 1.0 else 'MISSED'}.",
        f"- OTel SDK instruments cost **{otel:.2f}x** mlops-otel's hot path (goal: >= 5x): "
        f"{'met' if otel >= 5.0 else 'MISSED'}.",
        *_exemplar_line(net, ours),
    ]


def _exemplar_line(net: dict[str, float], ours: float) -> list[str]:
    sampled = net.get("mlops-otel (aggregate, sampled span: exemplars)")
    if sampled is None:
        return []
    return [f"- Inside a sampled span (every histogram write keeps its bucket's exemplar) the hot path costs "
            f"**{sampled / ours:.2f}x** the same writes with no sampled span (the row above, which the two "
            f"goals are measured on)."]


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    print(f"{'case':32} {'median us/req':>14} {'net':>8} {'min':>8} {'max':>8}")
    for r in rows:
        print(f"{r.case:32} {r.median_us:14.2f} {r.net_us:8.2f} {r.min_us:8.2f} {r.max_us:8.2f}")
    for k, v in ratios(rows).items():
        print(f"{k}: {v:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])

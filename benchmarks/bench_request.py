"""The whole hot path of one diagnosis request, against the same work done by hand.

mlops-otel: the 8 metric writes of a request, ``ab.assign_variant``, ``ab.record_result``,
``drift.add_production_sample`` and ``registry.update_metrics``, on the memory store and on
Redis (write-behind). The others do the same work with their own instruments: the 8 writes,
plus 3 for the A/B result (result count, latency and confidence per test and variant),
3 for the registry's running metrics (per model version), a SHA-256 bucket for the
assignment and a bounded ``deque`` append for the drift window. The hand-written floor does the
same work with nothing but dicts, lists and ``bisect`` (no locks, no label validation, no
export format): what no library doing this work can beat by much (issue #16: ``prediction()``
within 3x of it).

Two more rows compare ``runtime.prediction()`` with the five single calls it replaces
(``assign_variant``, ``record_gnn_metrics`` inside ``track_stage``, ``registry.update_metrics``,
the detector's ``add_production_sample`` and ``ab.record_result``), doing the same work on the
memory store; they are measured alternately, run by run, so both see the same machine load.

The goal lines compare wall time. Each timed run of mlops-otel ends by applying the writes its
requests deferred off the request path (``Telemetry.apply_pending()``, #16), so that work is in
the figure. mlops-otel also does work on its own threads (the buffer and store flushers, the
drift monitor's checks); the note column gives each case's process CPU time per request,
background threads included.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
import uuid
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import numpy as np
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlops_otel import Runtime, semconv
from mlops_otel.ab import ABTestConfig

from ._harness import Row, row, time_per_call
from ._services import redis_server

BENCH = "request"
FIVE_CALLS = "mlops-otel, five calls in track_stage, memory store"
PREDICTION = "mlops-otel, prediction(), memory store"
VERSIONS = ("v2.1.0", "v2.2.0")
USERS = [f"user-{i:05d}" for i in range(1000)]
CONF_BUCKETS = list(semconv.GNN_CONFIDENCE.buckets)
LAT_BUCKETS = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0]


def _bucket(user: str) -> int:
    digest = hashlib.sha256(b"gnn_v2.2_test." + user.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


@contextmanager
def _mlops(store: str | None, style: str = "calls") -> Iterator[Callable[[int], None]]:
    """The request's work on mlops-otel: *style* ``calls`` (the five single calls and a stage
    duration), ``stage`` (the five calls inside ``track_stage``, as the 0.1 example service wrote
    them) or ``prediction`` (one ``runtime.prediction()`` block doing the same)."""
    rt = Runtime.create(store=store, store_prefix=f"bench-{uuid.uuid4().hex[:8]}", fleet_metrics=False)
    try:
        rt.registry.register("gnn", "v2.1.0")
        rt.registry.register("gnn", "v2.2.0")
        rt.ab.start_test(ABTestConfig(name="gnn_v2.2_test", model_type="gnn", control_version="v2.1.0",
                                      treatment_version="v2.2.0", treatment_traffic_pct=50))
        rng = np.random.default_rng(0)
        detectors = {v: rt.drift.get_detector("gnn", v) for v in VERSIONS}
        for d in detectors.values():
            d.set_reference(anomaly_scores=rng.random(1000), confidences=rng.random(1000))
        tel, ab, reg = rt.telemetry, rt.ab, rt.registry
        stage = semconv.DIAGNOSIS_DURATION
        apply = tel.apply_pending

        def run(n: int) -> None:
            for i in range(n):
                variant = ab.assign_variant("gnn", USERS[i % 1000])
                version = variant["version"]
                tel.record(stage, ("gnn_inference",), 0.012)
                tel.record_gnn_metrics(version, 12.0, 0.31, 0.93)
                reg.update_metrics("gnn", version, 12.0, 0.93, error=False)
                detectors[version].add_production_sample(0.31, 0.93)
                ab.record_result(variant["test"], variant["name"], 12.0, 0.93, error=False)
                tel.record_rag_metrics("rag-1", 850.0, 640)
                tel.record_request("success", version, 0.9, "create_diagnosis")
            apply()  # the writes deferred off the request path (#16) are part of the work timed

        def run_stage(n: int) -> None:
            drift = rt.drift
            for i in range(n):
                variant = ab.assign_variant("gnn", USERS[i % 1000])
                version = variant["version"]
                with tel.track_stage("gnn_inference", version, model_type="gnn"):
                    tel.record_gnn_metrics(version, 12.0, 0.31, 0.93)
                reg.update_metrics("gnn", version, 12.0, 0.93, error=False)
                drift.get_detector("gnn", version).add_production_sample(0.31, 0.93)
                if variant["test"]:
                    ab.record_result(variant["test"], variant["name"], 12.0, 0.93, error=False)
                tel.record_rag_metrics("rag-1", 850.0, 640)
                tel.record_request("success", version, 0.9, "create_diagnosis")
            apply()

        prediction = rt.prediction

        def run_prediction(n: int) -> None:
            for i in range(n):
                with prediction("gnn", USERS[i % 1000]) as p:
                    p.observe(anomaly_score=0.31, confidence=0.93, inference_time_ms=12.0)
                tel.record_rag_metrics("rag-1", 850.0, 640)
                tel.record_request("success", p.version or "", 0.9, "create_diagnosis")
            apply()

        yield {"calls": run, "stage": run_stage, "prediction": run_prediction}[style]
    finally:
        rt.close()


def _prometheus(bound: bool) -> Callable[[int], None]:
    reg = CollectorRegistry()

    def h(name: str, labels: list[str], buckets: list[float]) -> Histogram:
        return Histogram(name, "", labels, buckets=buckets, registry=reg)

    spec = {s.name: s for s in semconv.SEED_METRICS}
    fam = {name: h(s.prometheus_name, list(s.labels), list(s.buckets))
           for name, s in spec.items() if s.kind is semconv.MetricKind.HISTOGRAM}
    requests = Counter("diagnosis_requests", "", ["status", "model_version"], registry=reg)
    ab_n = Counter("ab_results", "", ["test", "variant", "error"], registry=reg)
    ab_lat = h("ab_latency_ms", ["test", "variant"], LAT_BUCKETS)
    ab_conf = h("ab_confidence", ["test", "variant"], CONF_BUCKETS)
    reg_n = Counter("model_results", "", ["model_type", "model_version", "error"], registry=reg)
    reg_lat = h("model_latency_ms", ["model_type", "model_version"], LAT_BUCKETS)
    reg_conf = h("model_confidence", ["model_type", "model_version"], CONF_BUCKETS)
    windows = {v: deque(maxlen=1000) for v in VERSIONS}
    dur, gdur = fam["diagnosis_duration"], fam["gnn_inference_duration"]
    score, conf = fam["gnn_anomaly_score"], fam["gnn_confidence"]
    rdur, tok = fam["rag_generation_duration"], fam["rag_tokens_used"]
    if not bound:
        def run(n: int) -> None:
            for i in range(n):
                treat = _bucket(USERS[i % 1000]) < 5_000
                v, name = ("v2.2.0", "treatment") if treat else ("v2.1.0", "control")
                dur.labels("gnn_inference").observe(0.012)
                gdur.labels(v).observe(0.012)
                score.labels(v).observe(0.31)
                conf.labels(v).observe(0.93)
                reg_n.labels("gnn", v, "false").inc()
                reg_lat.labels("gnn", v).observe(12.0)
                reg_conf.labels("gnn", v).observe(0.93)
                windows[v].append((0.31, 0.93))
                ab_n.labels("gnn_v2.2_test", name, "false").inc()
                ab_lat.labels("gnn_v2.2_test", name).observe(12.0)
                ab_conf.labels("gnn_v2.2_test", name).observe(0.93)
                rdur.labels("rag-1").observe(0.85)
                tok.labels("rag-1").observe(640)
                requests.labels("success", v).inc()
                dur.labels("create_diagnosis").observe(0.9)
        return run

    per_version = {}
    for v, name in (("v2.1.0", "control"), ("v2.2.0", "treatment")):
        per_version[v] = (
            name, gdur.labels(v), score.labels(v), conf.labels(v), reg_n.labels("gnn", v, "false"),
            reg_lat.labels("gnn", v), reg_conf.labels("gnn", v), windows[v],
            ab_n.labels("gnn_v2.2_test", name, "false"), ab_lat.labels("gnn_v2.2_test", name),
            ab_conf.labels("gnn_v2.2_test", name), requests.labels("success", v),
        )
    s_gnn, s_req = dur.labels("gnn_inference"), dur.labels("create_diagnosis")
    r_dur, r_tok = rdur.labels("rag-1"), tok.labels("rag-1")

    def run_bound(n: int) -> None:
        for i in range(n):
            v = "v2.2.0" if _bucket(USERS[i % 1000]) < 5_000 else "v2.1.0"
            _, g, s, c, rn, rl, rc, w, an, al, ac, rq = per_version[v]
            s_gnn.observe(0.012)
            g.observe(0.012)
            s.observe(0.31)
            c.observe(0.93)
            rn.inc()
            rl.observe(12.0)
            rc.observe(0.93)
            w.append((0.31, 0.93))
            an.inc()
            al.observe(12.0)
            ac.observe(0.93)
            r_dur.observe(0.85)
            r_tok.observe(640)
            rq.inc()
            s_req.observe(0.9)

    return run_bound


def _otel() -> Callable[[int], None]:
    views = [View(instrument_name=s.name, aggregation=ExplicitBucketHistogramAggregation(s.buckets))
             for s in semconv.SEED_METRICS if s.buckets]
    views += [View(instrument_name=n, aggregation=ExplicitBucketHistogramAggregation(LAT_BUCKETS))
              for n in ("ab_latency", "model_latency")]
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()], views=views).get_meter("bench")
    hist = {s.name: meter.create_histogram(s.name, s.unit) for s in semconv.SEED_METRICS
            if s.kind is semconv.MetricKind.HISTOGRAM}
    requests = meter.create_counter("diagnosis_requests")
    ab_n, reg_n = meter.create_counter("ab_results"), meter.create_counter("model_results")
    ab_lat, ab_conf = meter.create_histogram("ab_latency"), meter.create_histogram("ab_confidence")
    reg_lat, reg_conf = meter.create_histogram("model_latency"), meter.create_histogram("model_confidence")
    windows = {v: deque(maxlen=1000) for v in VERSIONS}
    attrs: dict[str, Any] = {}
    for v, name in (("v2.1.0", "control"), ("v2.2.0", "treatment")):
        attrs[v] = ({"model_version": v}, {"model_type": "gnn", "model_version": v, "error": False},
                    {"model_type": "gnn", "model_version": v}, {"test": "gnn_v2.2_test", "variant": name,
                                                                 "error": False},
                    {"test": "gnn_v2.2_test", "variant": name}, {"status": "success", "model_version": v})
    s_gnn, s_req, rag = {"stage": "gnn_inference"}, {"stage": "create_diagnosis"}, {"model_version": "rag-1"}
    dur, gdur = hist["diagnosis_duration"], hist["gnn_inference_duration"]
    score, conf = hist["gnn_anomaly_score"], hist["gnn_confidence"]
    rdur, tok = hist["rag_generation_duration"], hist["rag_tokens_used"]

    def run(n: int) -> None:
        for i in range(n):
            v = "v2.2.0" if _bucket(USERS[i % 1000]) < 5_000 else "v2.1.0"
            a, rn, rv, an, av, rq = attrs[v]
            dur.record(0.012, s_gnn)
            gdur.record(0.012, a)
            score.record(0.31, a)
            conf.record(0.93, a)
            reg_n.add(1, rn)
            reg_lat.record(12.0, rv)
            reg_conf.record(0.93, rv)
            windows[v].append((0.31, 0.93))
            ab_n.add(1, an)
            ab_lat.record(12.0, av)
            ab_conf.record(0.93, av)
            rdur.record(0.85, rag)
            tok.record(640, rag)
            requests.add(1, rq)
            dur.record(0.9, s_req)

    return run


def _floor() -> Callable[[int], None]:
    """The same work by hand: per series a list of bucket counts (``bisect``) plus sum and count; dict counters."""
    spec = {x.name: x for x in semconv.SEED_METRICS}

    def hist(buckets: Any) -> tuple[list[float], list[float]]:
        bounds = list(buckets)
        return bounds, [0.0] * (len(bounds) + 3)  # bucket counts, then sum and count

    def observe(series: tuple[list[float], list[float]], value: float) -> None:
        bounds, counts = series
        counts[bisect_left(bounds, value)] += 1
        counts[-2] += value
        counts[-1] += 1

    counters: dict[tuple[str, ...], float] = {}
    per_version = {}
    for v, name in (("v2.1.0", "control"), ("v2.2.0", "treatment")):
        per_version[v] = (
            hist(spec["gnn_inference_duration"].buckets), hist(spec["gnn_anomaly_score"].buckets),
            hist(spec["gnn_confidence"].buckets), ("model_results", "gnn", v, "false"), hist(LAT_BUCKETS),
            hist(CONF_BUCKETS), deque(maxlen=1000), ("ab_results", "gnn_v2.2_test", name, "false"),
            hist(LAT_BUCKETS), hist(CONF_BUCKETS), ("diagnosis_requests", "success", v),
        )
    s_gnn, s_req = hist(spec["diagnosis_duration"].buckets), hist(spec["diagnosis_duration"].buckets)
    r_dur, r_tok = hist(spec["rag_generation_duration"].buckets), hist(spec["rag_tokens_used"].buckets)

    def run(n: int) -> None:
        for i in range(n):
            v = "v2.2.0" if _bucket(USERS[i % 1000]) < 5_000 else "v2.1.0"
            g, sc, c, rn, rl, rc, w, an, al, ac, rq = per_version[v]
            observe(s_gnn, 0.012)
            observe(g, 0.012)
            observe(sc, 0.31)
            observe(c, 0.93)
            counters[rn] = counters.get(rn, 0.0) + 1
            observe(rl, 12.0)
            observe(rc, 0.93)
            w.append((0.31, 0.93))
            counters[an] = counters.get(an, 0.0) + 1
            observe(al, 12.0)
            observe(ac, 0.93)
            observe(r_dur, 0.85)
            observe(r_tok, 640)
            counters[rq] = counters.get(rq, 0.0) + 1
            observe(s_req, 0.9)

    return run


def _baseline() -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            _ = USERS[i % 1000]

    return run


def _timed(case: str, fn: Callable[[int], None], n: int, repeat: int) -> Row:
    """Wall time per request, noting the process CPU time per request (background threads included)."""
    cpu_start = time.process_time()
    runs = time_per_call(fn, n, repeat)
    cpu = (time.process_time() - cpu_start) / (n * repeat + min(n, 1000)) * 1e6
    return row(BENCH, case, runs, n, f"process CPU {cpu:.2f} us/request incl. background threads")


def _interleaved(cases: dict[str, Callable[[int], None]], n: int, repeat: int) -> list[Row]:
    """Wall time per request of each case, alternating the cases run by run.

    The note adds the request thread's own CPU time (median over runs), which other processes'
    load on the machine does not inflate: the fairer comparison on a busy machine.
    """
    for fn in cases.values():
        fn(min(n, 1000))  # warm up
    runs: dict[str, list[float]] = {case: [] for case in cases}
    thread_cpu: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(repeat):
        for case, fn in cases.items():
            cpu_start = time.thread_time()
            runs[case].extend(time_per_call(fn, n, 1, warmup=0))
            thread_cpu[case].append((time.thread_time() - cpu_start) / n)
    return [row(BENCH, case, runs[case], n, f"request-thread CPU {statistics.median(thread_cpu[case]) * 1e6:.2f} "
                "us/request (median); measured alternately with the other prediction row")
            for case in cases]


def run(quick: bool = False) -> list[Row]:
    n, repeat = (2_000, 3) if quick else (20_000, 9)
    rows = [_timed("uninstrumented", _baseline(), n, repeat)]
    with _mlops(None) as fn:
        rows.append(_timed("mlops-otel, memory store", fn, n, repeat))
    # prediction() next to the five calls it replaces (inside track_stage, as the 0.1 example did),
    # interleaved run by run so that both see the same machine load.
    with _mlops(None, "stage") as five, _mlops(None, "prediction") as one:
        rows.extend(_interleaved({FIVE_CALLS: five, PREDICTION: one}, n, repeat))
    with redis_server() as url, _mlops(url) as fn:
        rows.append(_timed("mlops-otel, Redis store (write-behind)", fn, n, repeat))
    rows.append(_timed("prometheus_client pre-bound", _prometheus(True), n, repeat))
    rows.append(_timed("prometheus_client .labels()", _prometheus(False), n, repeat))
    rows.append(_timed("OTel SDK instruments", _otel(), n, repeat))
    rows.append(_timed("hand-written floor (dict + bisect)", _floor(), n, repeat))
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The issue-7 goals for the whole request, as ratios of medians measured in this run."""
    med = {r["case"]: r["median_us"] for r in rows}
    lines = []
    for ours in ("mlops-otel, memory store", "mlops-otel, Redis store (write-behind)"):
        prom = med["prometheus_client pre-bound"] / med[ours]
        otel = med["OTel SDK instruments"] / med[ours]
        lines.append(
            f"- {ours}: prometheus_client pre-bound costs **{prom:.2f}x** (goal >= 1.0: "
            f"{'met' if prom >= 1.0 else 'MISSED'}), OTel SDK instruments **{otel:.2f}x** "
            f"(goal >= 5: {'met' if otel >= 5.0 else 'MISSED'})."
        )
    if PREDICTION in med and FIVE_CALLS in med:
        ratio = med[FIVE_CALLS] / med[PREDICTION]
        notes = {r["case"]: r.get("note", "") for r in rows}
        lines.append(
            f"- `runtime.prediction()` vs the five calls it replaces (same work, in `track_stage`): the calls cost "
            f"**{ratio:.2f}x** the prediction block in wall time (goal >= 1.0: {'met' if ratio >= 1.0 else 'MISSED'}); "
            f"request-thread CPU: {notes[FIVE_CALLS].split(' us')[0].split()[-1]} vs "
            f"{notes[PREDICTION].split(' us')[0].split()[-1]} us."
        )
    floor = med.get("hand-written floor (dict + bisect)")
    if floor:
        lines.append(
            f"- The hand-written floor (dict + bisect) costs {floor:.2f} µs: prometheus_client pre-bound is "
            f"{med['prometheus_client pre-bound'] / floor:.1f}x it, mlops-otel (memory store) "
            f"{med['mlops-otel, memory store'] / floor:.1f}x."
        )
    if floor and PREDICTION in med:
        # issue #16: the one-call API at <= 0.5x prometheus_client pre-bound doing the same work, <= 3x the floor
        vs_prom = med[PREDICTION] / med["prometheus_client pre-bound"]
        vs_floor = med[PREDICTION] / floor
        lines.append(
            f"- `runtime.prediction()` (whole request) costs **{vs_prom:.2f}x** prometheus_client pre-bound "
            f"(goal <= 0.5: {'met' if vs_prom <= 0.5 else 'not met'}) and **{vs_floor:.1f}x** the hand-written "
            f"floor (goal <= 3: {'met' if vs_floor <= 3.0 else 'not met'})."
        )
    return lines


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    for r in rows:
        print(f"{r.case:42} {r.median_us:8.2f} us/request (min {r.min_us:.2f}, max {r.max_us:.2f})")
    print("\n".join(summary([attrs.asdict(r) for r in rows])))

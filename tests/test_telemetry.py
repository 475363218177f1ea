"""Aggregation, cardinality, invalid input, threads and fork safety of Telemetry."""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_otel import semconv
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value, samples

from .strategies import any_floats, durations_ms, label_values, unit_interval


def test_counter_gauge_histogram_roundtrip() -> None:
    tel = Telemetry()
    tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"))
    tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"), 2.0)
    tel.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.25)
    tel.set(semconv.MODEL_DRIFT_SCORE, ("gnn", "v1"), 0.125)
    for value in (0.05, 0.5, 0.5, 3.0):
        tel.record(semconv.DIAGNOSIS_DURATION, ("gnn_inference",), value)
    assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="v1") == 3.0
    assert sample_value(tel, "model_drift_score", model_type="gnn", model_version="v1") == 0.125
    assert sample_value(tel, "diagnosis_duration_seconds_count", stage="gnn_inference") == 4.0
    assert sample_value(tel, "diagnosis_duration_seconds_sum", stage="gnn_inference") == pytest.approx(4.05)
    # le is inclusive: the two 0.5 observations fall in the 0.5 bucket.
    assert sample_value(tel, "diagnosis_duration_seconds_bucket", stage="gnn_inference", le="0.5") == 3.0
    assert sample_value(tel, "diagnosis_duration_seconds_bucket", stage="gnn_inference", le="0.25") == 1.0
    assert sample_value(tel, "diagnosis_duration_seconds_bucket", stage="gnn_inference", le="+Inf") == 4.0


def test_seed_helpers_convert_milliseconds_to_seconds() -> None:
    tel = Telemetry()
    tel.record_gnn_metrics("v2.1.0", 80.0, 0.31, 0.93)
    tel.record_rag_metrics("gpt-4-turbo", 1500.0, 900)
    assert sample_value(tel, "gnn_inference_duration_seconds_sum", model_version="v2.1.0") == pytest.approx(0.08)
    assert sample_value(tel, "gnn_inference_duration_seconds_bucket", model_version="v2.1.0", le="0.1") == 1.0
    assert sample_value(tel, "gnn_anomaly_score_bucket", model_version="v2.1.0", le="0.5") == 1.0
    assert sample_value(tel, "gnn_confidence_bucket", model_version="v2.1.0", le="0.9") == 0.0
    assert sample_value(tel, "gnn_confidence_bucket", model_version="v2.1.0", le="0.95") == 1.0
    assert sample_value(tel, "rag_generation_duration_seconds_bucket", model_version="gpt-4-turbo",
                        le="2.0") == 1.0
    assert sample_value(tel, "rag_tokens_used_bucket", model_version="gpt-4-turbo", le="1000.0") == 1.0


@pytest.mark.parametrize(
    ("call", "metric"),
    [
        (lambda t: t.record_gnn_metrics("v", math.nan, 0.5, 0.5), "gnn_inference_duration"),
        (lambda t: t.record_gnn_metrics("v", -1.0, 0.5, 0.5), "gnn_inference_duration"),
        (lambda t: t.record_gnn_metrics("v", 1.0, 1.5, 0.5), "gnn_anomaly_score"),
        (lambda t: t.record_gnn_metrics("v", 1.0, 0.5, -0.1), "gnn_confidence"),
        (lambda t: t.record_gnn_metrics("v", 1.0, 0.5, math.inf), "gnn_confidence"),
        (lambda t: t.record_rag_metrics("v", 1.0, -3), "rag_tokens_used"),
        (lambda t: t.record_rag_metrics("v", math.inf, 3), "rag_generation_duration"),
        (lambda t: t.set_drift_score("gnn", "v", 1.2), "model_drift_score"),
        (lambda t: t.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v"), -1.0), "diagnosis_requests"),
    ],
)
def test_invalid_measurements_are_counted_not_recorded(
    call: Callable[[Telemetry], None], metric: str, caplog: pytest.LogCaptureFixture
) -> None:
    tel = Telemetry()
    call(tel)
    call(tel)
    assert sample_value(tel, "mlops_invalid_measurements_total", metric=metric) == 2.0
    spec = semconv.metric_by_name(metric)
    recorded = [k for k in samples(tel) if k[0].startswith(spec.prometheus_name)]
    if spec.kind is semconv.MetricKind.HISTOGRAM:
        assert sample_value(tel, f"{spec.prometheus_name}_count", model_version="v") in (None, 0.0)
    else:
        assert recorded == []
    # Logged once, not per measurement.
    assert sum(metric in r.getMessage() for r in caplog.records) == 1


def test_wrong_label_arity_never_raises() -> None:
    tel = Telemetry()
    tel.add(semconv.DIAGNOSIS_REQUESTS, ("only-one",))
    assert sample_value(tel, "mlops_telemetry_errors_total", reason="add") == 1.0


def test_cardinality_limit_folds_into_other() -> None:
    tel = Telemetry(max_label_values=3)
    for i in range(10):
        tel.record_gnn_metrics(f"v{i}", 1.0, 0.5, 0.5)
    versions = {dict(k[1]).get("model_version") for k in samples(tel) if k[0] == "gnn_confidence_count"}
    assert versions == {"v0", "v1", "v2", "other"}
    assert sample_value(tel, "gnn_confidence_count", model_version="other") == 7.0
    assert sample_value(tel, "mlops_label_overflow_total", metric="gnn_confidence") == 7.0


def test_eight_threads_give_exact_totals() -> None:
    tel = Telemetry()
    n = 5_000
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait()
        for _ in range(n):
            tel.record_gnn_metrics(f"v{k % 2}", 5.0, 0.5, 0.9)
            tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", f"v{k % 2}"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for v in ("v0", "v1"):
        assert sample_value(tel, "diagnosis_requests_total", status="success", model_version=v) == 4 * n
        assert sample_value(tel, "gnn_confidence_count", model_version=v) == 4 * n
        assert sample_value(tel, "gnn_confidence_sum", model_version=v) == pytest.approx(0.9 * 4 * n)


def _child_records(tel: Telemetry, conn: multiprocessing.connection.Connection, k: int) -> None:
    for _ in range(100 + k):
        tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"))
    conn.send(sample_value(tel, "diagnosis_requests_total", status="success", model_version="v1"))
    conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_children_start_from_zero() -> None:
    """A pre-fork server's workers must not re-export the parent's counts."""
    tel = Telemetry()
    for _ in range(50):
        tel.add(semconv.DIAGNOSIS_REQUESTS, ("success", "v1"))
    ctx = multiprocessing.get_context("fork")
    results = []
    for k in range(3):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_child_records, args=(tel, child, k))
        proc.start()
        results.append(parent.recv())
        proc.join(10)
        assert proc.exitcode == 0
    assert results == [100.0, 101.0, 102.0]
    assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="v1") == 50.0


def test_snapshot_is_a_copy() -> None:
    tel = Telemetry()
    tel.record(semconv.DIAGNOSIS_DURATION, ("x",), 0.1)
    snap = tel.snapshot()
    tel.record(semconv.DIAGNOSIS_DURATION, ("x",), 0.1)
    (family,) = snap
    assert family.series[0].count == 1


def test_invalid_constructor_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"max_label_values must be an int >= 1, got 0"):
        Telemetry(max_label_values=0)
    with pytest.raises(ValueError, match=r"mode must be one of .*got 'fast'"):
        Telemetry(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"export_interval must be a positive finite number, got -1"):
        Telemetry(export_interval=-1)


# ------------------------------------------------------------------ properties
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(durations_ms, unit_interval, unit_interval), min_size=1, max_size=40))
def test_histogram_matches_reference_aggregation(rows: list[tuple[float, float, float]]) -> None:
    tel = Telemetry()
    for ms, score, conf in rows:
        tel.record_gnn_metrics("v", ms, score, conf)
    bounds = semconv.GNN_CONFIDENCE.buckets
    expected = [0] * (len(bounds) + 1)
    for _, _, conf in rows:
        expected[bisect_left(bounds, conf)] += 1
    (family,) = [f for f in tel.snapshot() if f.spec is semconv.GNN_CONFIDENCE]
    assert list(family.series[0].bucket_counts) == expected
    assert family.series[0].sum == pytest.approx(sum(r[2] for r in rows))
    assert family.series[0].min == min(r[2] for r in rows)
    assert family.series[0].max == max(r[2] for r in rows)


@settings(max_examples=60, deadline=None)
@given(label_values, any_floats, any_floats, any_floats)
def test_recording_never_raises(version: str, ms: float, score: float, conf: float) -> None:
    tel = Telemetry()
    tel.record_gnn_metrics(version, ms, score, conf)
    valid = [0.0 <= ms * 0.001 <= 1.7e308, 0.0 <= score <= 1.0, 0.0 <= conf <= 1.0]
    invalid_total = sum(v for (name, _), v in samples(tel).items() if name == "mlops_invalid_measurements_total")
    assert invalid_total == valid.count(False)


@settings(max_examples=40, deadline=None)
@given(st.lists(label_values, min_size=1, max_size=30), st.integers(1, 10))
def test_cardinality_never_exceeds_limit_plus_other(values: list[str], limit: int) -> None:
    tel = Telemetry(max_label_values=limit)
    for v in values:
        tel.record_gnn_metrics(v, 1.0, 0.5, 0.5)
    seen = {dict(k[1])["model_version"] for k in samples(tel) if k[0] == "gnn_confidence_count"}
    assert len(seen - {"other"}) <= limit
    total = sum(v for (name, _), v in samples(tel).items() if name == "gnn_confidence_count")
    assert total == len(values)


def test_non_string_label_values_never_break_the_exposition() -> None:
    tel = Telemetry()
    tel.record_gnn_metrics(None, 1.0, 0.5, 0.5)  # type: ignore[arg-type]  # e.g. a version that is not known
    tel.record(semconv.DIAGNOSIS_DURATION, (3,), 0.1)  # type: ignore[arg-type]  # a stage passed as an int
    text = tel.render_prometheus().decode()  # would raise on a None label value
    assert 'gnn_confidence_count{model_version="unknown"} 1.0' in text
    assert 'diagnosis_duration_seconds_count{stage="3"} 1.0' in text


def test_the_tracer_provider_is_looked_up_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SDK: the request's stages, GenAI operations and prediction reuse the request's answer to
    "can a span record?" (one provider lookup, an environment read while none is set, per request, #16);
    outside a request every call asks, unless a "no SDK" answer younger than NO_SDK_RECHECK_S is kept."""
    from mlops_otel.telemetry import _telemetry as impl

    calls: list[int] = []
    lookup = impl._get_tracer_provider

    def counting() -> Any:
        calls.append(1)
        return lookup()

    monkeypatch.setattr(impl, "_get_tracer_provider", counting)
    monkeypatch.setattr(impl._NO_SDK, "until", -1.0)
    monkeypatch.setattr(impl, "NO_SDK_RECHECK_S", 0.0)  # every answer stale at once: the per-request reuse alone
    tel = Telemetry()
    try:
        @tel.track_diagnosis_request("create_diagnosis")
        def handler() -> None:
            with tel.track_stage("gnn_inference", "v1"), tel.track_stage("rag_generation", "rag-1"), \
                    tel.gen_ai_retrieval("notes"), tel.gen_ai_operation("m", provider="p") as op:
                op.record_usage(3, 4)

        handler()
        assert len(calls) == 1
        handler()
        assert len(calls) == 2
        with tel.track_stage("gnn_inference", "v1"), tel.track_stage("rag_generation", "rag-1"):
            pass
        assert len(calls) == 4
        # A kept "no SDK" answer: no lookup at all until it is stale.
        monkeypatch.setattr(impl, "NO_SDK_RECHECK_S", 3600.0)
        monkeypatch.setattr(impl._NO_SDK, "until", -1.0)
        handler()
        handler()
        with tel.track_stage("gnn_inference", "v1"):
            pass
        assert len(calls) == 5
        monkeypatch.setattr(impl._NO_SDK, "until", -1.0)  # stale: the next question looks again
        handler()
        assert len(calls) == 6
    finally:
        tel.close()


@settings(max_examples=40, deadline=None)
@given(writes=st.lists(st.tuples(st.sampled_from(["t1", "t2", "t3"]), st.sampled_from(["control", "treatment"]),
                                 st.integers(0, 5)), max_size=12),
       limit=st.integers(1, 3))
def test_add_each_records_what_as_many_add_calls_record(writes: list[tuple[str, str, int]], limit: int) -> None:
    """``add_each(spec, labels, n)`` (a batch of counted additions) is *n* ``add`` calls, label folding and its
    per-write overflow count included."""
    each, one_by_one = Telemetry(max_label_values=limit), Telemetry(max_label_values=limit)
    try:
        for test, variant, n in writes:
            each.add_each(semconv.AB_ASSIGNMENTS, (test, variant), n)
            for _ in range(n):
                one_by_one.add(semconv.AB_ASSIGNMENTS, (test, variant))
        assert samples(each) == samples(one_by_one)
    finally:
        each.close()
        one_by_one.close()

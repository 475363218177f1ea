"""``runtime.prediction()``: one call records a prediction into the seed metrics, A/B, registry and drift."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider

import mlops_otel
from mlops_otel import Runtime, Settings, current_prediction
from mlops_otel.ab import ABTestConfig
from mlops_otel.testing import sample_value, samples

from .services import RedisServer

TEST = "gnn_v2.2_test"


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    mlops_otel.reset_default()
    yield
    mlops_otel.reset_default()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def rt(spans: InMemorySpanExporter) -> Iterator[Runtime]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    runtime = Runtime.create(Settings(drift={"check_interval": None}), tracer_provider=provider)
    runtime.registry.register("gnn", "v2.1.0")
    runtime.registry.register("gnn", "v2.2.0")
    yield runtime
    runtime.close()


def start_test(rt: Runtime, pct: float = 50.0) -> None:
    rt.ab.start_test(ABTestConfig(name=TEST, model_type="gnn", control_version="v2.1.0",
                                  treatment_version="v2.2.0", treatment_traffic_pct=pct))


def ready(rt: Runtime) -> Runtime:
    """*rt* with both GNN versions registered and the A/B test started."""
    rt.registry.register("gnn", "v2.1.0")
    rt.registry.register("gnn", "v2.2.0")
    start_test(rt)
    return rt


@contextlib.contextmanager
def runtime_pair(settings: Settings) -> Iterator[tuple[Runtime, Runtime]]:
    """Two :func:`ready` runtimes of *settings*: one for ``prediction()``, one for the single calls."""
    one, five = (ready(Runtime.create(settings)) for _ in range(2))
    try:
        yield one, five
    finally:
        one.close()
        five.close()


def counts(rt: Runtime) -> dict[str, Any]:
    """What every part saw, per version."""
    rt.registry.flush()
    rt.ab.flush()
    out: dict[str, Any] = {}
    for version in ("v2.1.0", "v2.2.0"):
        stats = rt.registry.get("gnn", version).stats
        detector = rt.drift.detectors().get(f"gnn:{version}")
        out[version] = {
            "registry": (stats.n, stats.errors),
            "drift": 0 if detector is None else detector.accepted_samples,
            "gnn": sample_value(rt.telemetry, "gnn_confidence_count", model_version=version) or 0.0,
        }
    return out


def test_records_once_everywhere_with_the_assigned_version(rt: Runtime, spans: InMemorySpanExporter) -> None:
    start_test(rt)
    seen: Counter[str] = Counter()
    for i in range(200):
        with rt.prediction("gnn", user_id=f"user-{i}", request_kind="batch") as p:
            assert current_prediction() is None  # only the decorator form sets it
            assert p.test == TEST
            assert (p.variant, p.version) in {("control", "v2.1.0"), ("treatment", "v2.2.0")}
            p.observe(anomaly_score=0.2, confidence=0.9)
        seen[p.version or ""] += 1
    assert current_prediction() is None
    assert min(seen.values()) > 50  # both arms served
    got = counts(rt)
    for version, n in seen.items():
        assert got[version] == {"registry": (n, 0), "drift": n, "gnn": float(n)}
    control, treatment = rt.ab.results(TEST)
    assert (control.n, treatment.n) == (seen["v2.1.0"], seen["v2.2.0"])
    assert control.confidence.n == control.n  # the confidence reached the A/B evidence
    assert sample_value(rt.telemetry, "diagnosis_duration_seconds_count", stage="gnn_inference") == 200.0
    stage_spans = [s for s in spans.get_finished_spans() if s.name == "gnn.inference"]
    assert len(stage_spans) == 200
    attributes = stage_spans[0].attributes or {}
    assert attributes["mlops.ab.test"] == TEST
    assert attributes["request_kind"] == "batch"
    assert attributes["mlops.model.version"] in ("v2.1.0", "v2.2.0")
    assert attributes["mlops.gnn.confidence"] == 0.9


def test_an_exception_is_an_error_everywhere_and_is_reraised_unchanged(
        rt: Runtime, spans: InMemorySpanExporter) -> None:
    start_test(rt, pct=50.0)
    boom = KeyError("missing feature")
    p = rt.prediction("gnn", user_id="user-1")

    def failing() -> None:
        with p:
            p.observe(anomaly_score=0.4, confidence=0.7)
            raise boom

    with pytest.raises(KeyError) as info:
        failing()
    assert info.value is boom
    assert p.error_type == "KeyError"
    version = p.version
    assert version is not None
    rt.registry.flush()
    rt.ab.flush()
    stats = rt.registry.get("gnn", version).stats
    assert (stats.n, stats.errors, stats.latency_ms.n) == (1, 1, 0)  # no latency for a failure, as in 0.1
    control, treatment = rt.ab.results(TEST)
    arm = control if p.variant == "control" else treatment
    assert (arm.n, arm.errors) == (1, 1)
    assert sample_value(rt.telemetry, "diagnosis_errors_total", error_type="KeyError", stage="gnn_inference") == 1.0
    # The outputs the model produced before the failure still describe its output distribution.
    assert rt.drift.get_detector("gnn", version).accepted_samples == 1
    (span,) = [s for s in spans.get_finished_spans() if s.name == "gnn.inference"]
    assert span.status.status_code.name == "ERROR"
    assert [e.name for e in span.events] == ["exception"]


def test_without_a_test_the_champion_serves_and_ab_is_untouched(rt: Runtime) -> None:
    with rt.prediction("gnn", user_id="u") as p:
        p.observe(anomaly_score=0.1, confidence=0.95, inference_time_ms=12.5)
    assert (p.variant, p.version, p.test) == ("champion", "v2.1.0", None)
    rt.registry.flush()
    stats = rt.registry.get("gnn", "v2.1.0").stats
    assert stats.n == 1
    assert stats.latency_ms.mean == pytest.approx(12.5)  # the reported latency replaces the wall time


def test_a_prediction_is_weakly_referenceable_but_takes_no_new_attributes(rt: Runtime) -> None:
    """Slots (the prediction's cost) keep weak references working; a stray attribute is an error."""
    import weakref

    with rt.prediction("gnn", user_id="u-1") as p:
        assert weakref.ref(p)() is p
        with pytest.raises(AttributeError):
            p.custom = 1  # type: ignore[attr-defined]
        p.observe(anomaly_score=0.2, confidence=0.9)


def test_an_unknown_model_type_records_nothing_and_never_raises(rt: Runtime) -> None:
    with rt.prediction("bert", user_id="u") as p:
        p.observe(anomaly_score=0.1, confidence=0.9)
    assert p.version is None
    assert sample_value(rt.telemetry, "mlops_invalid_measurements_total", metric="prediction.model_version") == 1.0
    with rt.prediction("bert", default_version="b1") as p:
        p.observe(anomaly_score=0.1, confidence=0.9)
    assert p.version == "b1"


def test_async_with_and_the_decorator_forms(rt: Runtime) -> None:
    start_test(rt)

    async def handler(user: str) -> str | None:
        async with rt.prediction("gnn", user_id=user) as p:
            await asyncio.sleep(0)
            p.observe(anomaly_score=0.3, confidence=0.8)
        return p.version

    @rt.prediction("gnn")
    def predict(x: float, user_id: str, prediction: mlops_otel.Prediction) -> tuple[str | None, str | None]:
        assert current_prediction() is prediction
        prediction.observe(anomaly_score=x, confidence=0.9)
        return prediction.version, prediction.user_id

    @rt.prediction("gnn")
    async def apredict(user_id: str) -> None:
        p = current_prediction()
        assert p is not None
        p.observe(anomaly_score=0.5, confidence=0.5)

    versions = [asyncio.run(handler(f"a-{i}")) for i in range(10)]
    decorated = [predict(0.2, user_id=f"d-{i}") for i in range(10)]
    assert all(user == f"d-{i}" for i, (_, user) in enumerate(decorated))
    for i in range(10):
        asyncio.run(apredict(f"e-{i}"))
    total = sum(v["registry"][0] for v in counts(rt).values())
    assert total == 30
    assert set(versions) <= {"v2.1.0", "v2.2.0"}


def test_a_prediction_is_used_once(rt: Runtime) -> None:
    p = rt.prediction("gnn")
    with p:
        pass
    with pytest.raises(RuntimeError, match="used once"), p:
        pass


def test_extra_metrics_and_features_reach_their_parts_or_are_counted_as_faults(rt: Runtime) -> None:
    """Contract 4: extra metrics go to ab.record_result(metrics=), features/embedding to the drift detector."""
    start_test(rt)
    with rt.prediction("gnn", user_id="u-1") as p:
        p.observe(anomaly_score=0.2, confidence=0.9, features={"temp": 71.0}, embedding=[0.1, 0.2], clicked=True)
    rt.registry.flush()
    assert rt.registry.get("gnn", p.version or "").stats.n == 1  # never lost, whatever the other parts take


# --------------------------------------------------------------- a service from scratch
SERVICE = '''
"""A user's service, written from the README: instrument_app + prediction()."""
import os

from fastapi import FastAPI, Request
from pydantic import BaseModel

from mlops_otel import Settings
from mlops_otel.fastapi import get_runtime, instrument_app
from mlops_otel.metrics import track_diagnosis_request

app = FastAPI()
instrument_app(app, settings=Settings(store=os.environ["STORE_URL"], drift={"check_interval": None}).with_options(
    store_prefix=os.environ["STORE_PREFIX"]), instrument_http=False)


class Item(BaseModel):
    user_id: str
    x: float
    fail: bool = False


def model(version: str, x: float) -> tuple[float, float]:
    return (x / 2 if version == "v2.2.0" else x / 3), 0.9


@app.post("/predict")
@track_diagnosis_request("predict")
async def predict(item: Item, request: Request) -> dict[str, object]:
    async with get_runtime(request.app).prediction("gnn", user_id=item.user_id) as p:
        score, confidence = model(p.version, item.x)
        p.observe(anomaly_score=score, confidence=confidence)
        if item.fail:
            raise RuntimeError("post-processing failed")
    return {"version": p.version, "variant": p.variant}
'''


def test_a_service_written_from_scratch_sees_every_request(
        tmp_path: Path, redis_service: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"svc-{uuid.uuid4().hex[:8]}"
    (tmp_path / "user_service.py").write_text(textwrap.dedent(SERVICE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("STORE_URL", redis_service.url)
    monkeypatch.setenv("STORE_PREFIX", prefix)
    import importlib

    service = importlib.import_module("user_service")
    sent, failures = 400, 0
    rng = random.Random(7)
    served: Counter[str] = Counter()
    with TestClient(service.app, raise_server_exceptions=False) as client:
        rt = ready(mlops_otel.fastapi.get_runtime(service.app))
        for i in range(sent):
            fail = rng.random() < 0.10
            failures += fail
            r = client.post("/predict", json={"user_id": f"user-{i}", "x": rng.random(), "fail": fail})
            assert r.status_code == (500 if fail else 200)
            if not fail:
                served[r.json()["variant"]] += 1
        metrics = client.get("/metrics").text
        got = counts(rt)
        drift = {v: got[v]["drift"] for v in got}
        evaluation = rt.ab.evaluate_test(TEST)
    assert 20 < failures < 70
    # Seed metrics (scraped over HTTP): every request, failures included, under its model version.
    ok = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
             if line.startswith("diagnosis_requests_total{") and 'status="success"' in line)
    err = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("diagnosis_requests_total{") and 'status="error"' in line)
    assert (ok, err) == (sent - failures, failures)
    assert f'diagnosis_errors_total{{error_type="RuntimeError",stage="gnn_inference"}} {float(failures)}' in metrics
    assert sum(got[v]["gnn"] for v in got) == sent
    # Drift window: every prediction's outputs (all were observed before the failure).
    assert sum(drift.values()) == sent
    # The A/B evaluation and the registry: exactly the requests sent, with the failures as errors.
    assert evaluation["n_control"] + evaluation["n_treatment"] == sent
    # After shutdown, a fresh runtime on the same Redis prefix reads what the service delivered.
    reader = Runtime.create(store=redis_service.url, store_prefix=prefix, fleet_metrics=False)
    try:
        control, treatment = reader.ab.results(TEST)
        assert control.n + treatment.n == sent
        assert control.errors + treatment.errors == failures
        assert control.n - control.errors == served["control"]
        assert treatment.n - treatment.errors == served["treatment"]
        registry = {v: reader.registry.get("gnn", v).stats for v in ("v2.1.0", "v2.2.0")}
        assert (registry["v2.1.0"].n, registry["v2.2.0"].n) == (control.n, treatment.n)
        assert (registry["v2.1.0"].errors, registry["v2.2.0"].errors) == (control.errors, treatment.errors)
        assert (drift["v2.1.0"], drift["v2.2.0"]) == (control.n, treatment.n)
    finally:
        reader.close()


# The latency and confidence a model may report: valid floats, ints, numpy numbers, None, NaN, infinities and
# out-of-range values (prediction() validates once and takes the registry's and A/B's private validated-input
# paths only for values check_result() accepts unchanged; everything else goes through the public methods).
_LATENCIES = st.one_of(st.floats(0.0, 5_000.0), st.floats(allow_nan=True, allow_infinity=True),
                       st.integers(-3, 3), st.just(1e13), st.builds(np.float64, st.floats(0.0, 100.0)))
_CONFIDENCES = st.one_of(st.none(), st.floats(0.0, 1.0), st.floats(allow_nan=True, allow_infinity=True),
                         st.integers(-1, 2), st.builds(np.float64, st.floats(0.0, 1.0)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases=st.lists(st.tuples(_LATENCIES, _CONFIDENCES, st.booleans(), st.integers(0, 30)), min_size=1,
                      max_size=12))
def test_prediction_records_exactly_what_the_five_calls_record(
        cases: list[tuple[float | int, float | int | None, bool, int]]) -> None:
    """Same registry statistics, A/B results, drift samples and invalid-measurement counts as the public calls."""
    with runtime_pair(Settings(drift={"check_interval": None})) as (one, five):
        for latency, confidence, fail, user in cases:
            uid = f"user-{user}"
            with contextlib.suppress(ZeroDivisionError), one.prediction("gnn", user_id=uid) as p:
                p.observe(anomaly_score=0.5, confidence=confidence, inference_time_ms=latency)  # type: ignore[arg-type]
                if fail:
                    raise ZeroDivisionError
            _five_calls(five, uid, latency, confidence, fail)
        for r in (one, five):
            r.registry.flush()
            r.ab.flush()
        # Equal up to the order of summation: without a span, prediction() applies its records off the request
        # path (#16), after the failed and invalid ones it records at once, and float sums depend on order.
        for version in ("v2.1.0", "v2.2.0"):
            assert _same(one.registry.get("gnn", version).stats, five.registry.get("gnn", version).stats)
            d1, d5 = one.drift.detectors().get(f"gnn:{version}"), five.drift.detectors().get(f"gnn:{version}")
            assert (d1 and d1.accepted_samples) == (d5 and d5.accepted_samples)
        assert _same(one.ab.results(TEST), five.ab.results(TEST))

        def invalid(r: Runtime) -> dict[Any, float]:
            return {k: v for k, v in samples(r.telemetry).items() if k[0] == "mlops_invalid_measurements_total"}

        assert invalid(one) == invalid(five)
        assert _same(_recorded(one), _recorded(five))
        stage_count = ("diagnosis_duration_seconds_count", frozenset({("stage", "gnn_inference")}))
        assert _recorded(one)[stage_count] == len(cases)


def _same(a: Any, b: Any) -> bool:
    """*a* == *b*, floats compared up to rounding (sums of the same terms in another order)."""
    if attrs.has(type(a)):
        return type(a) is type(b) and _same(attrs.asdict(a, recurse=False), attrs.asdict(b, recurse=False))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12) or a == b
    return bool(a == b)


def _five_calls(five: Runtime, uid: str, latency: float | int, confidence: float | int | None, fail: bool,
                score: float = 0.5) -> None:
    """What one prediction() records, with the five single calls."""
    a = five.ab.assign_variant("gnn", uid)
    version = a["version"]
    assert version is not None
    with contextlib.suppress(ZeroDivisionError), five.telemetry.track_stage("gnn_inference", version,
                                                                           model_type="gnn"):
        if confidence is not None:
            five.telemetry.record_gnn_metrics(version, latency, score, confidence)  # type: ignore[arg-type]
        if fail:
            raise ZeroDivisionError
    ok_latency, ok_confidence = (None, None) if fail else (latency, confidence)
    five.registry.update_metrics("gnn", version, ok_latency, ok_confidence, error=fail)
    five.ab.record_result(TEST, a["name"], ok_latency, ok_confidence, error=fail)
    if confidence is not None:
        five.drift.get_detector("gnn", version).add_production_sample(score, confidence)  # type: ignore[arg-type]


def _recorded(r: Runtime) -> dict[Any, float]:
    """Every telemetry series a prediction writes but the stage's wall time (and no gauge)."""
    return {k: v for k, v in samples(r.telemetry).items()
            if k[0].startswith(("gnn_", "diagnosis_", "ab_results", "ab_assignments",
                                "mlops_invalid", "mlops_telemetry_errors", "mlops_label_overflow"))
            and k[0] not in ("diagnosis_duration_seconds_sum", "diagnosis_duration_seconds_bucket")}


@pytest.mark.parametrize("mode", ["aggregate", "passthrough"])
def test_the_fused_writes_follow_label_folding_a_fork_reset_and_passthrough(mode: str) -> None:
    """prediction()'s pre-bound series: never a folded one (each write counts its overflow), rebound after
    the reset a forked child does, and the single calls where OTel instruments must see every write."""
    settings = Settings(drift={"check_interval": None}, max_label_values=1, mode=mode)
    with runtime_pair(settings) as (one, five):
        for part in range(2):
            for i in range(16):
                with one.prediction("gnn", user_id=f"user-{i}") as p:
                    p.observe(anomaly_score=0.5, confidence=0.75, inference_time_ms=3.0)
                _five_calls(five, f"user-{i}", 3.0, 0.75, False)
            if part == 0:
                before = _recorded(one)
                assert before == _recorded(five)
                for r in (one, five):
                    r.telemetry._after_fork()  # what a forked child does: every series starts from zero
        after = _recorded(one)
        assert after == _recorded(five)
        # One version's series are folded into "other" (1 label value allowed), and every write to them counted.
        assert sum(v for k, v in after.items() if k[0] == "mlops_label_overflow_total") >= 16
        assert after == before  # the same 16 predictions again, counted from zero after the reset


# Without an SDK (the API's no-op tracer, or its proxy while no global provider is installed) prediction()
# starts no stage span: nothing could record it. The stage's metrics are the same; a provider installed
# later is used by the very next prediction.
_LATE_PROVIDER = textwrap.dedent("""
    import time

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from mlops_otel import Runtime, Settings
    from mlops_otel.ab import ABTestConfig
    from mlops_otel.telemetry import NO_SDK_RECHECK_S
    from mlops_otel.testing import sample_value

    rt = Runtime.create(Settings(drift={"check_interval": None}))  # no provider: the API's proxy tracer
    rt.registry.register("gnn", "v2.1.0")
    rt.registry.register("gnn", "v2.2.0")
    rt.ab.start_test(ABTestConfig(name="t", model_type="gnn", control_version="v2.1.0",
                                  treatment_version="v2.2.0", treatment_traffic_pct=50))
    tel = rt.telemetry
    # A propagated (remote, sampled) parent, as a server gets from its caller: a non-recording span made
    # current over it would carry the same context, so only its identity tells that one was opened.
    from opentelemetry import context
    remote = trace.SpanContext(trace_id=1, span_id=2, is_remote=True, trace_flags=trace.TraceFlags(1))
    context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    outside = trace.get_current_span()
    with rt.prediction("gnn", user_id="u1") as p:
        assert trace.get_current_span() is outside  # no span of ours was made current
        p.observe(anomaly_score=0.2, confidence=0.9)

    @tel.track_diagnosis_request("diagnose")
    def handle(sdk):  # the single calls skip their spans too, and honour a later provider
        assert (trace.get_current_span() is not outside) is sdk
        with tel.track_stage("preprocess", "v2.1.0") as stage:
            assert stage.is_recording() is sdk and (trace.get_current_span() is outside) is not sdk
            assert (stage is trace.INVALID_SPAN) is not sdk
            tel.record_gnn_metrics("v2.1.0", 3.0, 0.25, 0.75)

    handle(False)
    assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="v2.1.0") == 1.0
    assert sample_value(tel, "diagnosis_duration_seconds_count", stage="preprocess") == 1.0
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    time.sleep(2 * NO_SDK_RECHECK_S)  # the kept "no SDK" answer is stale by then (a monotonic clock)
    handle(True)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert sorted(by_name) == ["diagnosis", "preprocess"], sorted(by_name)
    assert by_name["preprocess"].attributes["mlops.gnn.anomaly_score"] == 0.25
    assert by_name["diagnosis"].attributes["mlops.model.version"] == "v2.1.0"
    assert sample_value(tel, "diagnosis_duration_seconds_count", stage="preprocess") == 2.0
    spans.clear()
    with rt.prediction("gnn", user_id="u2") as p:
        p.observe(anomaly_score=0.3, confidence=0.8)
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert span.name == "gnn.inference", span.name
    assert attributes["mlops.model.version"] == p.version, attributes
    assert attributes["mlops.ab.test"] == "t", attributes
    assert attributes["mlops.gnn.confidence"] == 0.8, attributes
    assert sample_value(rt.telemetry, "diagnosis_duration_seconds_count", stage="gnn_inference") == 2.0
    assert sample_value(rt.telemetry, "gnn_confidence_count", model_version=p.version) >= 1.0
    rt.close()
    print("ok")
""")


def test_without_an_sdk_no_stage_span_and_a_provider_installed_later_is_used_soon() -> None:
    # Its own interpreter: the global tracer provider can be set only once per process.
    done = subprocess.run([sys.executable, "-c", _LATE_PROVIDER], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_the_no_op_tracer_records_the_stage_metrics_and_leaves_an_outer_stage_span_alone(
        rt: Runtime, spans: InMemorySpanExporter) -> None:
    quiet = Runtime.create(Settings(drift={"check_interval": None}), tracer_provider=NoOpTracerProvider())
    try:
        quiet.registry.register("gnn", "v1")
        with quiet.prediction("gnn", user_id="u") as p:
            p.observe(anomaly_score=0.2, confidence=0.9, inference_time_ms=3.0)
        assert p.version == "v1"
        assert sample_value(quiet.telemetry, "diagnosis_duration_seconds_count", stage="gnn_inference") == 1.0
        assert sample_value(quiet.telemetry, "gnn_confidence_count", model_version="v1") == 1.0
        # Inside a recording stage of another runtime, the no-op one opens its (non-recording) span as before,
        # which hides the outer span from the seed helpers: its attributes stay the outer stage's own.
        with rt.telemetry.track_stage("preprocess", "v2.1.0"), quiet.prediction("gnn", user_id="u") as p:
            p.observe(anomaly_score=0.7, confidence=0.6)
        (outer,) = [s for s in spans.get_finished_spans() if s.name == "preprocess"]
        assert "mlops.gnn.confidence" not in (outer.attributes or {})
        assert sample_value(quiet.telemetry, "gnn_confidence_count", model_version="v1") == 2.0
    finally:
        quiet.close()

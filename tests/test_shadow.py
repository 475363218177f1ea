"""Shadow traffic: off the request path, complete or counted, compared as declared, summarised honestly."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlops_otel.drift import ks_2samp
from mlops_otel.registry import InvalidValueError
from mlops_otel.shadow import Difference, Flip, ShadowConfig, ShadowRunner, clopper_pearson, summarize
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

COMPARE = (Difference("anomaly_score", 0.1), Flip("anomaly_score", 0.5))


def make(**kw: Any) -> ShadowConfig:
    base: dict[str, Any] = {"model_type": "gnn", "challenger_version": "v2.2.0", "comparisons": COMPARE,
                            "min_pairs": 50}
    return ShadowConfig(**(base | kw))


def noisy(sd: float, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    lock = threading.Lock()

    def challenger(x: float) -> dict[str, float]:
        with lock:
            noise = float(rng.normal(0.0, sd))
        return {"anomaly_score": float(np.clip(x + noise, 0.0, 1.0))}

    return challenger


# ------------------------------------------------------------------ values
@pytest.mark.parametrize(("kw", "message"), [
    ({"sample_rate": 1.5}, "sample_rate must be a finite number in [0, 1], got 1.5"),
    ({"queue_size": 0}, "queue_size must be an integer in [1, 10000000], got 0"),
    ({"comparisons": ()}, "comparisons must be one or more Difference / Flip comparisons, got ()"),
    ({"comparisons": (Flip("s", 0.5), Flip("s", 0.7))}, "comparisons must be comparisons with distinct names"),
    ({"model_type": "a{b}"}, "model_type must be a non-empty string without braces"),
])
def test_invalid_config_names_field_expectation_and_value(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        make(**kw)
    assert str(info.value).startswith(message)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0.01, 0.99))
def test_comparisons(champion: float, challenger: float, threshold: float) -> None:
    diff, disagree = Difference("s", 0.1).compare(champion, challenger)
    assert diff == abs(champion - challenger)
    assert disagree == (diff > 0.1)
    _, flipped = Flip("s", threshold).compare(champion, challenger)
    assert flipped == ((champion >= threshold) != (challenger >= threshold))


def test_clopper_pearson_known_values() -> None:
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert clopper_pearson(10, 10)[0] == pytest.approx(0.025 ** (1 / 10))
    lo, hi = clopper_pearson(50, 100)
    assert lo == pytest.approx(0.3983, abs=1e-4)
    assert hi == pytest.approx(0.6017, abs=1e-4)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


# ------------------------------------------------------------------ runner
def test_every_sampled_pair_completes_and_is_counted_once() -> None:
    tel = Telemetry()
    rng = np.random.default_rng(1)
    xs = rng.random(600)
    with ShadowRunner(make(workers=2, queue_size=1000), noisy(0.05), telemetry=tel) as runner:
        for x in xs:
            assert runner.submit(float(x), {"anomaly_score": float(x)}, champion_latency_ms=1.0)
        assert runner.drain(30.0)
        report = runner.report()
    assert (report.submitted, report.completed, report.dropped, report.errors) == (600, 600, 0, 0)
    assert sample_value(tel, "shadow_pairs_total", model_type="gnn", outcome="completed") == 600.0
    assert sample_value(tel, "shadow_challenger_duration_seconds_count", model_type="gnn",
                        model_version="v2.2.0") == 600.0
    flips = report.comparison("anomaly_score_flip").disagreements
    assert sample_value(tel, "shadow_disagreements_total", model_type="gnn",
                        comparison="anomaly_score_flip") == float(flips)
    assert 0 < flips < 600 * 0.2  # noise sd 0.05 flips only scores near 0.5
    assert report.comparison("anomaly_score_difference").mean_difference == pytest.approx(0.04, abs=0.01)


def test_sampling_is_a_share_of_requests() -> None:
    with ShadowRunner(make(sample_rate=0.25), noisy(0.0), seed=7) as runner:
        queued = sum(runner.submit(0.3, {"anomaly_score": 0.3}) for _ in range(2000))
        runner.drain(30.0)
        report = runner.report()
    assert report.submitted == queued
    assert report.submitted + report.sampled_out == 2000
    lo, hi = clopper_pearson(queued, 2000, 0.999)
    assert lo < 0.25 < hi


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    tel = Telemetry()
    release = threading.Event()
    started = threading.Event()

    def stuck(x: float) -> dict[str, float]:
        started.set()
        release.wait(30)
        return {"anomaly_score": x}

    runner = ShadowRunner(make(queue_size=3), stuck, telemetry=tel)
    try:
        results = [runner.submit(0.1, {"anomaly_score": 0.1})]
        assert started.wait(10)  # the worker holds the first pair
        results += [runner.submit(0.1, {"anomaly_score": 0.1}) for _ in range(9)]  # returns: never waits
        assert results == [True, True, True] + [False] * 7
        assert sample_value(tel, "shadow_pairs_total", model_type="gnn", outcome="dropped") == 7.0
        release.set()
        assert runner.drain(30.0)
    finally:
        runner.close()
    report = runner.report()
    assert (report.submitted, report.completed, report.dropped) == (10, 3, 7)
    assert "7 requests were dropped" in report.recommendation


def test_close_counts_what_the_workers_did_not_reach_and_returns() -> None:
    release = threading.Event()
    runner = ShadowRunner(make(queue_size=10), lambda x: (release.wait(30), {"anomaly_score": x})[1])
    for _ in range(5):
        runner.submit(0.2, {"anomaly_score": 0.2})
    runner.close(timeout=0.2)  # one pair is stuck in the challenger, four never started
    report = runner.report()
    assert report.dropped == 4
    assert runner.submit(0.2, {"anomaly_score": 0.2}) is False  # closed: nothing more is queued
    release.set()
    runner.close()  # idempotent


def test_challenger_failures_are_measured_never_raised() -> None:
    tel = Telemetry()
    calls = iter(range(1_000_000))

    def flaky(x: float) -> Any:
        i = next(calls)
        if i % 10 == 0:
            raise TimeoutError("slow backend")
        if i % 10 == 1:
            return {"anomaly_score": math.nan}
        return {"anomaly_score": x}

    with ShadowRunner(make(), flaky, telemetry=tel) as runner:
        for _ in range(100):
            runner.submit(0.4, {"anomaly_score": 0.4})
        runner.drain(30.0)
        report = runner.report()
    assert dict(report.error_types) == {"TimeoutError": 10, "invalid_output": 10}
    assert report.completed == 80
    assert sample_value(tel, "shadow_pairs_total", model_type="gnn", outcome="error") == 20.0
    assert not report.ready
    assert any("challenger error rate 20.00%" in r for r in report.reasons)


def test_invalid_champion_output_and_latency_are_counted_not_raised() -> None:
    tel = Telemetry()
    with ShadowRunner(make(), noisy(0.0), telemetry=tel) as runner:
        assert runner.submit(0.1, {"confidence": 0.9}) is False
        assert runner.submit(0.1, None) is False  # type: ignore[arg-type]
        assert runner.submit(0.1, {"anomaly_score": 0.1}, champion_latency_ms=-1.0) is True
        runner.drain(10.0)
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="shadow.champion_output") == 2.0
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="shadow.champion_latency_ms") == 1.0


def test_async_challengers_run_on_the_workers_event_loop() -> None:
    async def challenger(x: float) -> dict[str, float]:
        await asyncio.sleep(0)
        return {"anomaly_score": 1.0 - x}

    async def service() -> None:  # submit from inside a running loop: no await, no blocking
        for _ in range(20):
            runner.submit(0.9, {"anomaly_score": 0.9})

    with ShadowRunner(make(), challenger) as runner:
        asyncio.run(service())
        runner.drain(30.0)
        report = runner.report()
    assert report.completed == 20
    assert report.comparison("anomaly_score_flip").disagreements == 20


def test_output_drift_gauge_and_report_use_the_drift_ks() -> None:
    tel = Telemetry()
    rng = np.random.default_rng(3)
    xs = rng.beta(2, 5, 400)
    with ShadowRunner(make(drift_every=100), lambda x: {"anomaly_score": min(1.0, x + 0.2)},
                      telemetry=tel) as runner:
        for x in xs:
            runner.submit(float(x), {"anomaly_score": float(x)})
        runner.drain(30.0)
        report = runner.report()
    expected = ks_2samp(xs, np.minimum(1.0, xs + 0.2)).statistic
    (shift,) = report.shifts
    assert shift.statistic == pytest.approx(expected)
    assert sample_value(tel, "shadow_output_drift", model_type="gnn", output="anomaly_score") == pytest.approx(
        expected)


# ------------------------------------------------------------------ report
def summary(**kw: Any) -> Any:
    base: dict[str, Any] = {
        "submitted": 1000, "sampled_out": 0, "dropped": 0, "completed": 1000, "errors": {},
        "disagreements": {"anomaly_score_flip": 10}, "difference_sums": {"anomaly_score_difference": 20.0},
        "challenger_latencies_ms": [5.0] * 100, "champion_latencies_ms": [5.0] * 100,
        "champion_outputs": {"anomaly_score": list(np.linspace(0, 1, 500))},
        "challenger_outputs": {"anomaly_score": list(np.linspace(0, 1, 500))},
    }
    return summarize(make(), **(base | kw))


def test_report_is_ready_when_every_limit_holds() -> None:
    report = summary()
    assert report.ready
    assert report.recommendation.startswith("Ready for an A/B test: gnn v2.2.0")
    assert report.to_dict()["comparisons"][1]["disagreements"] == 10


@pytest.mark.parametrize(("kw", "reason"), [
    ({"completed": 20, "submitted": 20}, "only 20 pairs completed, need 50"),
    ({"disagreements": {"anomaly_score_flip": 80}}, "anomaly_score_flip: disagreement 8.00%"),
    ({"errors": {"RuntimeError": 15}}, "challenger error rate 1.48%"),
    ({"challenger_latencies_ms": [12.0] * 100}, "challenger p99 latency 12.0 ms is 2.40x the champion's"),
    ({"challenger_outputs": {"anomaly_score": list(np.linspace(0.5, 1.0, 500))}}, "KS distance 0.500 > 0.3"),
])
def test_report_says_why_not_ready(kw: dict[str, Any], reason: str) -> None:
    report = summary(**kw)
    assert not report.ready
    assert any(r.startswith(reason) or reason in r for r in report.reasons), report.reasons
    assert report.recommendation.startswith("Not ready for an A/B test")


def test_submit_returns_while_the_challenger_is_still_busy() -> None:
    release = threading.Event()
    runner = ShadowRunner(make(queue_size=100), lambda x: (release.wait(30), {"anomaly_score": x})[1])
    try:
        assert all(runner.submit(0.5, {"anomaly_score": 0.5}) for _ in range(50))
        assert runner.pending == 50  # none finished: every submit returned without waiting for the challenger
        release.set()
        assert runner.drain(30.0)
        assert runner.report().completed == 50
    finally:
        runner.close(timeout=10.0)


# ------------------------------------------------------- runtime.prediction()
def test_prediction_shadows_successful_champion_requests_only() -> None:
    import mlops_otel
    from mlops_otel import Runtime, Settings
    from mlops_otel.ab import ABTestConfig

    mlops_otel.reset_default()
    rt = Runtime.create(Settings(drift={"check_interval": None}))
    try:
        for v in ("v2.1.0", "v2.2.0", "v2.3.0"):
            rt.registry.register("gnn", v)
        rt.registry.promote("gnn", "v2.1.0", reason="initial")
        cfg = make(challenger_version="v2.3.0", comparisons=(Difference("anomaly_score", 0.1),
                                                             Difference("confidence", 0.1)))
        with ShadowRunner(cfg, lambda x: {"anomaly_score": x, "confidence": 0.5}, telemetry=rt.telemetry) as runner:
            for i in range(40):
                x = i / 40
                with rt.prediction("gnn", user_id=f"u{i}", shadow=runner.bind(x)) as p:
                    p.observe(anomaly_score=x, confidence=0.9)
            with pytest.raises(KeyError), rt.prediction("gnn", user_id="u-fail", shadow=runner.bind(0.5)):
                raise KeyError("model failed")  # no champion output: nothing to shadow

            async def handler() -> None:  # the async form submits too
                async with rt.prediction("gnn", user_id="u-async", shadow=runner.bind(0.2)) as p:
                    p.observe(anomaly_score=0.2, confidence=0.9)

            asyncio.run(handler())
            rt.ab.start_test(ABTestConfig(name="t", model_type="gnn", control_version="v2.1.0",
                                          treatment_version="v2.2.0", treatment_traffic_pct=50.0))
            variants = []
            for i in range(40):
                with rt.prediction("gnn", user_id=f"w{i}", shadow=runner.bind(0.3)) as p:
                    p.observe(anomaly_score=0.3, confidence=0.9)
                    variants.append(p.variant)
            runner.drain(30.0)
            report = runner.report()
        assert 0 < variants.count("treatment") < 40
        assert report.completed == 41 + variants.count("control")  # treatment requests already run the new model
        assert report.comparison("confidence_difference").disagreements == report.completed  # 0.9 vs 0.5
        assert report.comparison("anomaly_score_difference").disagreements == 0
    finally:
        rt.close()
        mlops_otel.reset_default()

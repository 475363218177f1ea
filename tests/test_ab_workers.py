"""A/B tests across workers: watermarks, custom metrics, segments, the evaluator lease, history, outages."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from mlops_otel.ab import ABTestConfig, ABTestManager, ABTestState, MetricSpec
from mlops_otel.ab._collect import MAX_TESTS, Collector, read_cut, result_values
from mlops_otel.registry import ModelRegistry
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .test_ab_manager import Clock, eventually, make_config, setup


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _results(c: Collector, variant: str, k: int) -> None:
    for _ in range(k):
        c.add("t", variant, result_values(10.0, 0.9, False), [], None)


# ------------------------------------------------------------- watermarks
def test_decisions_cut_at_the_lowest_watermark_of_live_workers() -> None:
    store = MemoryStore()
    now = [10.0]
    a, b = Collector("a"), Collector("b")
    _results(a, "control", 100)
    _results(a, "treatment", 100)
    _results(b, "control", 50)
    _results(b, "treatment", 50)
    a.publish(store, "t", lambda: now[0], None)
    b.publish(store, "t", lambda: now[0], None)
    now[0] = 20.0
    _results(a, "control", 100)
    _results(a, "treatment", 90)
    a.publish(store, "t", lambda: now[0], None)  # b has not delivered anything after t=10

    cut = read_cut(store, "t", now=21.0, timeout=30.0)
    assert cut.watermark == 10.0
    assert (cut.control.n, cut.treatment.n) == (150, 150)  # a's snapshot at t=10, never a's later half
    assert (cut.excluded_control, cut.excluded_treatment) == (100, 90)
    assert (cut.total_control.n, cut.total_treatment.n) == (250, 240)
    assert cut.live_workers == 2

    # b confirms its sums are unchanged at t=20: the watermark moves on, nothing is excluded.
    now[0] = 20.0
    b.publish(store, "t", lambda: now[0], None)
    cut = read_cut(store, "t", now=21.0, timeout=30.0)
    assert (cut.watermark, cut.control.n, cut.excluded_control) == (20.0, 250, 0)


def test_dead_and_closed_workers_do_not_hold_decisions_back() -> None:
    store = MemoryStore()
    a, b = Collector("a"), Collector("b")
    _results(a, "control", 10)
    _results(b, "control", 5)
    b.publish(store, "t", lambda: 10.0, None)
    a.publish(store, "t", lambda: 10.0, None)
    _results(a, "control", 10)
    a.publish(store, "t", lambda: 100.0, None)
    # b was last heard of at t=10: dead after the 30 s timeout; its last snapshot is final.
    cut = read_cut(store, "t", now=101.0, timeout=30.0)
    assert (cut.watermark, cut.control.n, cut.live_workers, cut.workers) == (100.0, 25, 1, 2)
    # A worker that closed is not waited for even within the timeout.
    c = Collector("c")
    _results(c, "control", 1)
    c.publish(store, "t", lambda: 50.0, None, final=True)
    cut = read_cut(store, "t", now=101.0, timeout=30.0)
    assert (cut.watermark, cut.control.n) == (100.0, 26)


def test_a_worker_that_has_not_published_cannot_split_an_arm(tel: Telemetry, clock: Clock) -> None:
    """The 0.1 failure: one worker's control results visible without its treatment results."""
    store = MemoryStore()
    _, starter = setup(store, tel, clock)
    other = ABTestManager(store, starter.registry, telemetry=tel, clock=clock, sync_interval=3600.0,
                          refresh_interval=3600.0)
    starter.start_test(make_config(auto_finalize=True))
    other.refresh()
    for i in range(400):
        other.record_result("gnn_v2.2_test", "control" if i % 2 else "treatment", 10.0, 0.9, False)
    # Whatever the other worker has published so far (nothing, normally) is one snapshot of both arms.
    early = starter.evaluate_test("gnn_v2.2_test")
    assert abs(early.n_control - early.n_treatment) <= 1
    assert early.decision == "continue"
    assert other.flush()
    late = starter.evaluate_test("gnn_v2.2_test")
    assert (late.n_control, late.n_treatment) == (200, 200)
    other.close()


# --------------------------------------------------------- custom metrics
def test_custom_metrics_recorded_and_decided_by_the_same_rule(tel: Telemetry, clock: Clock) -> None:
    store = MemoryStore()
    _, manager = setup(store, tel, clock)
    cfg = make_config(metrics=[
        MetricSpec(name="thumbs_up", kind="binary", direction="higher", role="primary"),
        {"name": "tokens", "kind": "continuous", "direction": "lower", "margin": 5.0},
    ], guardrails={"max_error_rate_increase": 0.05}, min_samples=200)
    assert cfg.primary == "thumbs_up"
    manager.start_test(cfg)
    rng = np.random.default_rng(1)
    for i in range(6000):
        variant = manager.assign_variant("gnn", f"u{i}")["name"]
        treated = variant == "treatment"
        manager.record_result("gnn_v2.2_test", variant, 20.0, 0.8, False,
                              metrics={"thumbs_up": bool(rng.random() < (0.6 if treated else 0.5)),
                                       "tokens": float(rng.normal(100.0, 10.0))})
    manager.record_result("gnn_v2.2_test", "control", 20.0, 0.8, False, metrics={"nope": 1.0})
    manager.record_result("gnn_v2.2_test", "control", 20.0, 0.8, False, metrics={"thumbs_up": 0.5})
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="ab.metric.nope") == 1.0
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="ab.metric.thumbs_up") == 1.0
    result = manager.evaluate_test("gnn_v2.2_test")
    assert result.decision == "promote", result.recommendation
    thumbs, tokens = result.effect("thumbs_up"), result.effect("tokens")
    assert (thumbs.role, thumbs.verdict) == ("primary", "better")
    assert 0.05 < thumbs.estimate < 0.15
    assert tokens.role == "guardrail"
    assert tokens.non_inferior
    assert result.to_dict()["effects"]["tokens"]["higher_is_better"] is False


def test_a_breached_custom_guardrail_rolls_back(tel: Telemetry, clock: Clock) -> None:
    _, manager = setup(MemoryStore(), tel, clock)
    manager.start_test(make_config(metrics=[{"name": "cost", "direction": "lower", "margin": 0.01}]))
    for i in range(4000):
        variant = "treatment" if i % 2 else "control"
        manager.record_result("gnn_v2.2_test", variant, 20.0, 0.8, False,
                              metrics={"cost": 1.0 + (0.2 if i % 2 else 0.0) + 0.01 * (i % 7)})
    result = manager.evaluate_test("gnn_v2.2_test")
    assert result.decision == "rollback"
    assert result.effect("cost").verdict == "worse"


def test_segments_are_reported_with_bonferroni_and_never_decide(tel: Telemetry, clock: Clock) -> None:
    _, manager = setup(MemoryStore(), tel, clock)
    manager.start_test(make_config(segment_by="equipment", guardrails={"max_error_rate_increase": 0.05}))
    rng = np.random.default_rng(2)
    for i in range(6000):
        variant = "treatment" if i % 2 else "control"
        kind = ("pump", "valve", "motor")[i % 3]
        lift = 0.05 if kind == "pump" and variant == "treatment" else 0.0
        manager.record_result("gnn_v2.2_test", variant, 20.0, float(np.clip(rng.normal(0.8 + lift, 0.1), 0, 1)),
                              False, attributes={"equipment": kind, "other": "x"})
    result = manager.evaluate_test("gnn_v2.2_test")
    segments = {s.segment: s for s in result.segments}
    assert set(segments) == {"pump", "valve", "motor"}
    assert segments["pump"].effects[2].verdict == "better"
    assert segments["valve"].effects[2].verdict == "inconclusive"
    assert sum(s.n_control + s.n_treatment for s in segments.values()) == 6000
    # Bonferroni: each segment's interval is at alpha/3, wider than the same data at alpha.
    pump = segments["pump"].effects[2]
    assert result.to_dict()["segments"][0]["segment"] in segments
    assert pump.upper - pump.lower > 0
    assert result.decision in ("promote", "continue")  # decided on the whole test only


# ------------------------------------------------- lease, history, counting
def test_one_worker_at_a_time_evaluates_on_the_schedule(tel: Telemetry, clock: Clock) -> None:
    store = MemoryStore()
    registry, a = setup(store, tel, clock, auto_evaluate_interval=60.0)
    b = ABTestManager(store, registry, telemetry=tel, clock=clock, auto_evaluate_interval=60.0)
    a.start_test(make_config(auto_finalize=True, guardrails={"max_error_rate_increase": 0.05}))
    first = a.auto_evaluate()
    assert [e.test for e in first] == ["gnn_v2.2_test"]
    assert b.auto_evaluate() == []  # a holds the lease
    for i in range(3000):
        variant = "treatment" if i % 2 else "control"
        b.record_result("gnn_v2.2_test", variant, 20.0, 0.9 if i % 2 else 0.8, False)
    b.sync()
    assert a.auto_evaluate()[0].applied == "promoted"
    assert a.get_test("gnn_v2.2_test").state is ABTestState.PROMOTED
    assert registry.champion_version("gnn") == "v2.2.0"
    clock.now += 181.0  # the lease expired: b may take over
    assert b.auto_evaluate() == []  # nothing active any more, but b now holds the lease
    lease = store.get_document("ab:{_evaluator}:lease")
    assert lease is not None
    assert lease.value["holder"] == b.worker_id  # type: ignore[index,call-overload]

    history = b.evaluation_history("gnn_v2.2_test")  # shared: written by a, read by b
    assert [h["decision"] for h in history] == ["continue", "promote"]
    assert history[-1]["applied"] == "promoted"
    assert history[-1]["metrics"]["confidence"]["verdict"] == "better"
    assert sample_value(tel, "ab_decisions_total", test="gnn_v2.2_test", decision="promote") == 1.0


class WallClock(Clock):
    def __call__(self) -> float:
        return time.time()


def test_the_background_thread_runs_the_schedule(tel: Telemetry) -> None:
    store = MemoryStore()
    registry, manager = setup(store, tel, WallClock(), auto_evaluate_interval=0.05, sync_interval=0.05)
    manager.start_test(make_config())
    done = threading.Event()

    def poll() -> None:
        deadline = time.monotonic() + 20.0
        while not manager.evaluation_history("gnn_v2.2_test"):
            if time.monotonic() > deadline:
                return  # the assertion below fails; the thread does not outlive the test
            done.wait(0.01)
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    assert done.wait(20.0)
    manager.close()
    assert registry.champion_version("gnn") == "v2.1.0"


def test_manual_finalize_is_counted_and_kept_in_history(tel: Telemetry, clock: Clock) -> None:
    _, manager = setup(MemoryStore(), tel, clock)
    manager.start_test(make_config())
    assert manager.finalize_test("gnn_v2.2_test", "rollback", reason="not worth it")
    assert sample_value(tel, "ab_decisions_total", test="gnn_v2.2_test", decision="rollback") == 1.0
    assert manager.evaluation_history("gnn_v2.2_test")[-1] == {
        "time": clock.now, "decision": "rollback", "applied": "rolled_back", "by": "finalize"}


def test_history_is_bounded(tel: Telemetry, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_otel.ab import _manager

    monkeypatch.setattr(_manager, "HISTORY_LEN", 3)
    _, manager = setup(MemoryStore(), tel, clock)
    manager.start_test(make_config())
    for _ in range(5):
        clock.now += 1.0
        manager.evaluate_test("gnn_v2.2_test")
    assert [h["time"] for h in manager.evaluation_history("gnn_v2.2_test")] == [clock.now - 2, clock.now - 1,
                                                                                 clock.now]


def test_json_says_when_roles_moved(tel: Telemetry, clock: Clock) -> None:
    _, manager = setup(MemoryStore(), tel, clock)
    manager.start_test(make_config(auto_finalize=True))
    for i in range(3000):
        manager.record_result("gnn_v2.2_test", "treatment" if i % 2 else "control", 20.0, 0.8, bool(i % 2))
    result = manager.evaluate_test("gnn_v2.2_test")
    body = result.to_dict()
    assert (body["decision"], body["applied"], body["roles_moved"]) == ("rollback", "rolled_back", True)
    assert "Roles moved" in body["recommendation"]
    again = manager.evaluate_test("gnn_v2.2_test").to_dict()
    assert (again["applied"], again["roles_moved"]) == (None, False)


# --------------------------------------------------- the request path (#11)
class CountingStore(MemoryStore):
    """Counts store calls per thread; can go down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls: dict[int, int] = {}

    def _call(self) -> None:
        ident = threading.get_ident()
        self.calls[ident] = self.calls.get(ident, 0) + 1
        if self.down:
            raise ConnectionError("store down")

    def get_document(self, key: str) -> Any:
        self._call()
        return super().get_document(key)

    def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
        self._call()
        return super().compare_and_set(key, value, expected_version=expected_version)

    def list_keys(self, prefix: str) -> list[str]:
        self._call()
        return super().list_keys(prefix)

    def read_counters(self, key: str) -> dict[str, float]:
        self._call()
        return super().read_counters(key)


def test_no_store_call_on_the_request_thread_in_steady_state_and_outage(tel: Telemetry) -> None:
    store = CountingStore()
    registry = ModelRegistry(store, telemetry=tel)
    registry.register("gnn", "v2.1.0")
    registry.register("gnn", "v2.2.0")
    starter = ABTestManager(store, registry, telemetry=tel)
    starter.start_test(make_config())
    worker = ABTestManager(store, registry, telemetry=tel, refresh_interval=0.01, sync_interval=0.01)
    worker.watch("gnn")
    me = threading.get_ident()
    for outage in (False, True):
        store.down = outage
        before = store.calls.get(me, 0)
        for i in range(2000):
            a = worker.assign_variant("gnn", f"u{i}")
            worker.record_result("gnn_v2.2_test", a["name"], 10.0, 0.9, False)
        assert store.calls.get(me, 0) == before, f"store calls on the request thread (outage={outage})"
        assert a["test"] == "gnn_v2.2_test"  # served from the last known view during the outage
    store.down = False
    assert sample_value(tel, "mlops_ab_view_age_seconds", model_type="gnn") is not None

    def delivered() -> int:
        c, t = starter.results("gnn_v2.2_test")
        return c.n + t.n

    eventually(lambda: delivered() == 4000)  # the outage's results were kept and delivered afterwards
    worker.close()


def test_a_worker_started_during_an_outage_keeps_results_of_tests_it_never_loaded(tel: Telemetry,
                                                                                   clock: Clock) -> None:
    store = CountingStore()
    _, starter = setup(store, tel, clock)
    starter.start_test(make_config())
    store.down = True
    worker = ABTestManager(store, starter.registry, telemetry=tel, clock=clock, warmup_timeout=0.05)
    assert worker.assign_variant("gnn", "u1") == {"name": "champion", "version": None, "test": None}
    for i in range(300):
        worker.record_result("gnn_v2.2_test", "control" if i % 2 else "treatment", 10.0, 0.9, False)
    for i in range(10 * MAX_TESTS):  # bounded: a flood of wrong names cannot grow memory without limit
        worker.record_result(f"bogus-{i}", "control", 10.0, 0.9, False)
    assert len(worker._collector.tests()) <= MAX_TESTS
    store.down = False
    worker.sync()
    c, t = starter.results("gnn_v2.2_test")
    assert (c.n, t.n) == (150, 150)
    assert (sample_value(tel, "mlops_invalid_measurements_total", metric="ab.test") or 0) >= 10 * MAX_TESTS - 300
    worker.close()


def test_assign_variant_survives_a_user_id_whose_eq_raises(tel: Telemetry, clock: Clock) -> None:
    class Hostile:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no comparing me")

        __hash__ = object.__hash__

        def __str__(self) -> str:
            return "hostile-user"

    _, manager = setup(MemoryStore(), tel, clock)
    manager.start_test(make_config())
    a = manager.assign_variant("gnn", Hostile())  # type: ignore[arg-type]
    assert a["test"] == "gnn_v2.2_test"
    assert a == manager.assign_variant("gnn", "hostile-user")


def test_config_validates_metrics_and_primary() -> None:
    from mlops_otel.ab import InvalidConfigError

    with pytest.raises(InvalidConfigError, match="primary_metric must be a built-in or declared metric"):
        make_config(primary_metric="nope")
    with pytest.raises(InvalidConfigError, match="metrics must be at most one metric with role 'primary'"):
        make_config(metrics=[{"name": "a", "role": "primary"}, {"name": "b", "role": "primary"}])
    with pytest.raises(InvalidConfigError, match="name must be a metric name"):
        make_config(metrics=[{"name": "confidence"}])
    with pytest.raises(InvalidConfigError, match="kind must be one of 'binary', 'continuous', got 'ordinal'"):
        MetricSpec(name="x", kind="ordinal")
    cfg = make_config(metrics=[{"name": "fb", "kind": "binary", "role": "primary"}], segment_by="site")
    assert ABTestConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.integration
def test_decisions_taken_by_the_cli_reach_the_services_fleet_view(redis_service: Any) -> None:
    import uuid

    from mlops_otel._fleet import FleetMetrics
    from mlops_otel.cli._backends import StoreBackend
    from mlops_otel.stores.redis import RedisStore

    prefix = f"abfleet{uuid.uuid4().hex[:8]}"
    cli = StoreBackend(redis_service.url, prefix=prefix)
    cli.runtime.registry.register("gnn", "v2.1.0")
    cli.runtime.registry.register("gnn", "v2.2.0")
    cli.runtime.ab.start_test(make_config())
    assert cli.evaluate_test("gnn_v2.2_test")["decision"] == "continue"
    cli.close()

    tel = Telemetry()
    store = RedisStore.from_url(redis_service.url, prefix=prefix, telemetry=tel)
    fleet = FleetMetrics(store, tel, interval=60.0)
    try:
        fleet.start()  # a service's /metrics: its own counts plus every other worker's published ones
        fleet.refresh()
        assert sample_value(tel, "ab_decisions_total", test="gnn_v2.2_test", decision="continue") == 1.0
    finally:
        fleet.close()
        store.close()


def test_custom_metrics_and_segments_through_the_management_api() -> None:
    from fastapi.testclient import TestClient

    from mlops_otel.fastapi import get_runtime

    from .test_management import AUTH, PREFIX, make_app, register, start

    app = make_app()
    with TestClient(app) as client:
        register(client, "v2.1.0", "v2.2.0")
        started = start(client, treatment_traffic_pct=50, min_samples=50, segment_by="site",
                        metrics=[{"name": "thumbs_up", "kind": "binary", "role": "primary"}],
                        guardrails={"max_error_rate_increase": 0.05, "max_latency_increase_pct": 50})
        assert started.status_code == 201, started.text
        assert started.json()["config"]["metrics"][0]["name"] == "thumbs_up"
        bad = start(client, name="bad", metrics=[{"name": "confidence"}])
        assert bad.status_code == 422
        runtime = get_runtime(app)
        for i in range(400):
            variant = "treatment" if i % 2 else "control"
            runtime.ab.record_result("gnn_v2.2_test", variant, 20.0, 0.8, False,
                                     metrics={"thumbs_up": bool(i % 2) or i % 10 == 0},
                                     attributes={"site": "north" if i % 4 < 2 else "south"})
        body = client.post(f"{PREFIX}/ab/tests/gnn_v2.2_test/evaluate", headers=AUTH).json()
        assert body["primary"] == "thumbs_up"
        assert body["effects"]["thumbs_up"]["verdict"] == "better"
        assert {s["segment"] for s in body["segments"]} == {"north", "south"}
        assert body["decision"] == "promote"
        assert body["roles_moved"] is False


def test_the_cli_says_what_a_decision_left_out() -> None:
    from mlops_otel.cli._main import _excluded

    assert _excluded({"excluded_control": 0, "excluded_treatment": 0}) == ""
    assert _excluded({}) == ""  # an older server's JSON
    assert _excluded({"excluded_control": 3, "excluded_treatment": 5}) == (
        " (left out, not yet delivered by every worker: control 3, treatment 5)")


def test_close_is_bounded_when_the_store_stalls(tel: Telemetry, clock: Clock) -> None:
    stalled, release, blocked = threading.Event(), threading.Event(), threading.Event()

    class Stalled(MemoryStore):
        def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
            if stalled.is_set():
                blocked.set()
                release.wait()  # a SIGSTOPped Redis: no answer until released
            return super().compare_and_set(key, value, expected_version=expected_version)

    store = Stalled()
    _, manager = setup(store, tel, clock)
    manager.start_test(make_config())
    manager.record_result("gnn_v2.2_test", "control", 10.0, 0.9, False)
    stalled.set()
    try:
        manager.close(timeout=0.2)  # returns although the store never answers...
        assert (sample_value(tel, "mlops_telemetry_errors_total", reason="ab.close") or 0.0) >= 1.0
        assert blocked.wait(5.0)  # ...while the final publish is stuck in it
    finally:
        release.set()

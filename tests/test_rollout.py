"""Progressive rollout: schedule values, the step rule, monotone assignment, exactly-once step changes."""

from __future__ import annotations

import json
import multiprocessing as mp
import uuid
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_otel.ab import (
    ABTestConfig,
    ABTestManager,
    ABTestState,
    RolloutManager,
    RolloutSchedule,
    RolloutState,
    RolloutStatus,
    RolloutStep,
    StepDecision,
    assign_many,
    judge_step,
    step_config,
    step_stats,
)
from mlops_otel.registry import InvalidValueError, ModelRegistry, SufficientStats
from mlops_otel.stores import MemoryStore, StateStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer

SPAWN = mp.get_context("spawn")
NAME = "gnn_rollout"
#: Small steps (and wide guardrail margins in the test's config): a rollout that decides within a few hundred
#: results. No margins of its own: "no harm" is the ship rule's non-inferiority at the test's margins.
SCHEDULE = RolloutSchedule(steps=[RolloutStep(1.0, 300, 60.0), RolloutStep(5.0, 300), RolloutStep(20.0, 300),
                                  RolloutStep(50.0, 300)])
WIDE = {"max_error_rate_increase": 0.1, "max_latency_increase_pct": 50.0, "max_confidence_decrease": 0.2}


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(**kw: Any) -> ABTestConfig:
    base: dict[str, Any] = {"name": NAME, "model_type": "gnn", "control_version": "v2.1.0",
                            "treatment_version": "v2.2.0", "min_samples": 100, "planned_samples": 2000,
                            "guardrails": WIDE}
    return ABTestConfig(**(base | kw))


def parts(store: StateStore, tel: Telemetry, clock: Clock) -> tuple[ModelRegistry, ABTestManager, RolloutManager]:
    registry = ModelRegistry(store, telemetry=tel, clock=clock)
    for v in ("v2.1.0", "v2.2.0"):
        registry.register("gnn", v)
    manager = ABTestManager(store, registry, telemetry=tel, clock=clock, refresh_interval=0.0)
    return registry, manager, RolloutManager(manager, telemetry=tel, clock=clock)


def feed(manager: ABTestManager, pct: float, n_treatment: int, rng: np.random.Generator, *,
         err: tuple[float, float] = (0.02, 0.02), conf: tuple[float, float] = (0.8, 0.8)) -> None:
    """Results at the split *pct*: *n_treatment* treatment results and the matching control ones."""
    n_control = round(n_treatment * (100.0 - pct) / pct)
    for variant, n, e, c in (("control", n_control, err[0], conf[0]), ("treatment", n_treatment, err[1], conf[1])):
        errors = rng.random(n) < e
        lat = rng.normal(50.0, 5.0, n)
        cs = np.clip(rng.normal(c, 0.05, n), 0.0, 1.0)
        for i in range(n):
            manager.record_result(NAME, variant, float(lat[i]), float(cs[i]), bool(errors[i]))


# ---------------------------------------------------------------- the values
@pytest.mark.parametrize(("build", "message"), [
    (lambda: RolloutSchedule(steps=[]), "steps must be one or more RolloutStep values"),
    (lambda: RolloutSchedule.of((5.0, 1.0)),
     "steps must be steps with strictly increasing traffic_pct, got (5.0, 1.0)"),
    (lambda: RolloutStep(0.0), "traffic_pct must be a finite number in (0, 100), got 0.0"),
    (lambda: RolloutStep(5.0, min_results=1), "min_results must be an integer >= 2, got 1"),
    (lambda: RolloutSchedule.of(error_rate_margin=0.0), "error_rate_margin must be a finite number in (0, 1]"),
    (lambda: RolloutSchedule.of(confidence_margin=-1.0), "confidence_margin must be a finite number in (0, 1]"),
])
def test_invalid_values_name_field_expectation_and_value(build: Any, message: str) -> None:
    with pytest.raises(InvalidValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        build()


def test_state_round_trips_through_its_document() -> None:
    state = RolloutState(NAME, SCHEDULE, RolloutStatus.RAMPING, 0, 10.0, ({"n": 5.0}, {"n": 1.0}), "started")
    moved = state.moved(StepDecision.ADVANCE, 20.0, "no harm", ({"n": 9.0}, {"n": 3.0}))
    assert (moved.step, moved.traffic_pct, moved.step_started_at, moved.baseline[1]) == (1, 5.0, 20.0, {"n": 3.0})
    assert RolloutState.from_doc(moved.to_doc()) == moved
    assert state.moved(StepDecision.ROLLBACK, 20.0, "harm", state.baseline).traffic_pct == 0.0
    with pytest.raises(InvalidValueError, match="decision must be advance, handover or rollback"):
        state.moved(StepDecision.HOLD, 20.0, "", state.baseline)


def test_step_stats_are_the_results_since_the_step_began() -> None:
    before = SufficientStats.of([10.0, 20.0], [0.5, 0.7], errors=1)
    during = SufficientStats.of([30.0, 50.0, 70.0], [0.9, 0.8, 0.6], errors=2)
    got = step_stats(before.merge(during).to_counters(), before.to_counters())
    assert (got.n, got.errors) == (3, 2)
    assert got.latency_ms.mean == pytest.approx(50.0)
    assert got.confidence.variance == pytest.approx(during.confidence.variance)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.01, 99.0), st.floats(0.01, 99.0), st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True))
def test_raising_the_share_never_moves_a_treated_user_out(a: float, b: float, salt: str) -> None:
    low, high = sorted((a, b))
    ids = [f"user-{i}" for i in range(2000)]
    cfg = config(salt=salt, treatment_traffic_pct=low)
    before = assign_many(ids, cfg) == "treatment"
    after = assign_many(ids, attrs.evolve(cfg, treatment_traffic_pct=high)) == "treatment"
    assert not (before & ~after).any()


# ------------------------------------------------------------- the step rule
def arms(n_t: int, pct: float, err_t: float, *, err_c: float = 0.02) -> tuple[SufficientStats, SufficientStats]:
    n_c = round(n_t * (100 - pct) / pct)
    return (SufficientStats.of([50.0] * n_c, [0.8] * n_c, errors=round(err_c * n_c)),
            SufficientStats.of([50.0] * n_t, [0.8] * n_t, errors=round(err_t * n_t)))


def test_harm_rolls_back_at_once_even_before_min_results() -> None:
    slow = attrs.evolve(SCHEDULE, steps=[attrs.evolve(SCHEDULE.steps[0], min_results=1000), *SCHEDULE.steps[1:]])
    # Half the step's minimum, but 30 % errors against 2 % (and enough events for a proportion to decide).
    c, t = arms(500, 1.0, 0.30)
    verdict = judge_step(c, t, config(), slow, 0, 0.0)
    assert verdict.decision is StepDecision.ROLLBACK
    assert "error_rate significantly worse" in verdict.reasons[0]


def test_a_step_holds_for_its_results_and_time_then_advances() -> None:
    c, t = arms(150, 1.0, 0.02)
    held = judge_step(c, t, config(), SCHEDULE, 0, 120.0)
    assert held.decision is StepDecision.HOLD
    assert "150 of 300 treatment results at 1%" in held.reasons
    c, t = arms(400, 1.0, 0.02)
    held = judge_step(c, t, config(), SCHEDULE, 0, 30.0)
    assert held.decision is StepDecision.HOLD
    assert held.reasons == ("30 of 60 seconds at 1%",)
    assert judge_step(c, t, config(), SCHEDULE, 0, 60.0).decision is StepDecision.ADVANCE
    c, t = arms(400, 50.0, 0.02)
    assert judge_step(c, t, config(), SCHEDULE, 3, 0.0).decision is StepDecision.HANDOVER


def test_no_harm_needs_non_inferiority_not_just_no_significant_harm() -> None:
    tight = attrs.evolve(SCHEDULE, error_rate_margin=0.001)
    c, t = arms(400, 5.0, 0.02)
    verdict = judge_step(c, t, config(), tight, 1, 0.0)
    assert verdict.decision is StepDecision.HOLD
    assert verdict.reasons[0].startswith("error_rate: harm up to")


def test_step_config_uses_the_steps_split_and_tightens_at_its_minimum() -> None:
    cfg = step_config(config(auto_finalize=True), SCHEDULE.steps[1])
    assert (cfg.treatment_traffic_pct, cfg.planned_samples, cfg.auto_finalize) == (5.0, 6000, False)


# ------------------------------------------------------------ the owner
def test_rollout_ramps_step_by_step_and_promotes() -> None:
    tel, clock, rng = Telemetry(), Clock(), np.random.default_rng(1)
    registry, manager, rollouts = parts(MemoryStore(), tel, clock)
    # The handover decision is the test's ship rule: its error margin must be one 320 results per arm can show.
    rollouts.start(config(guardrails={"max_error_rate_increase": 0.05}), SCHEDULE)
    assert manager.get_test(NAME).config.treatment_traffic_pct == 1.0
    assert registry.get_challenger("gnn").version == "v2.2.0"  # type: ignore[union-attr]
    ids = [f"u{i}" for i in range(3000)]
    treated_before: set[str] = set()
    for step, pct in enumerate((1.0, 5.0, 20.0, 50.0)):
        assert rollouts.get(NAME).step == step
        treated = {u for u in ids if manager.assign_variant("gnn", u)["name"] == "treatment"}
        assert treated_before <= treated  # monotone through the manager too
        assert abs(len(treated) / len(ids) - pct / 100) < 0.05
        treated_before = treated
        feed(manager, pct, 320, rng, conf=(0.8, 0.9))
        if step == 0:  # the first step also needs 60 s
            assert rollouts.check(NAME).verdict.decision is StepDecision.HOLD  # type: ignore[union-attr]
            clock.now += 61
        done = rollouts.check(NAME)
        assert done.changed == ("handover" if step == 3 else "advance")
        if step < 3:
            assert rollouts.check(NAME).changed is None  # the next step has no results yet: hold
    final = rollouts.check(NAME)  # handed over: the test's own decision on the last step's results
    assert final.changed == "promote"
    assert final.roles_moved
    assert registry.champion_version("gnn") == "v2.2.0"
    assert manager.get_test(NAME).state is ABTestState.PROMOTED
    events = [h.action for h in registry.history("gnn") if h.action.startswith("rollout_")]
    assert events == ["rollout_start", "rollout_advance", "rollout_advance", "rollout_advance", "rollout_handover",
                      "rollout_promote"]
    assert sample_value(tel, "rollout_step_changes_total", test=NAME, decision="advance") == 3.0
    assert sample_value(tel, "rollout_traffic_percent", test=NAME) == 50.0
    assert [h["decision"] for h in rollouts.get(NAME).history] == ["start", "advance", "advance", "advance",
                                                                   "handover", "promote"]
    assert [(r.test, r.status) for r in rollouts.list_rollouts()] == [(NAME, RolloutStatus.PROMOTED)]


def test_broken_challenger_is_rolled_back_at_its_first_step() -> None:
    tel, clock, rng = Telemetry(), Clock(), np.random.default_rng(2)
    registry, manager, rollouts = parts(MemoryStore(), tel, clock)
    rollouts.start(config(), SCHEDULE)
    feed(manager, 1.0, 500, rng, err=(0.02, 0.4))  # enough expected events for a proportion to decide
    check = rollouts.check(NAME)
    assert check.changed == "rollback"
    assert check.roles_moved
    assert check.status is RolloutStatus.ROLLED_BACK
    assert check.traffic_pct == 0.0
    assert manager.get_test(NAME).state is ABTestState.ROLLED_BACK
    assert registry.champion_version("gnn") == "v2.1.0"
    assert registry.get_challenger("gnn") is None
    assert manager.assign_variant("gnn", "u1")["test"] is None
    assert sample_value(tel, "rollout_step_changes_total", test=NAME, decision="rollback") == 1.0
    assert sample_value(tel, "ab_decisions_total", test=NAME, decision="rollback") == 1.0  # the guardrail alert
    assert rollouts.check(NAME).changed is None  # nothing more happens


def test_a_crash_between_the_step_change_and_the_traffic_change_is_repaired() -> None:
    tel, clock, rng = Telemetry(), Clock(), np.random.default_rng(3)
    _, manager, rollouts = parts(MemoryStore(), tel, clock)
    rollouts.start(config(), SCHEDULE)
    feed(manager, 1.0, 320, rng)
    clock.now += 61
    state = rollouts.get(NAME)
    c, t = manager.results(NAME)
    # The step change of a worker that died right after its compare-and-set:
    moved = state.moved(StepDecision.ADVANCE, clock.now, "no harm", (c.to_counters(), t.to_counters()))
    assert manager.store.compare_and_set(rollouts._key(NAME), moved.to_doc(), expected_version=1)
    assert manager.get_test(NAME).config.treatment_traffic_pct == 1.0
    check = rollouts.check(NAME)
    assert check.step == 1
    assert check.changed is None
    assert manager.get_test(NAME).config.treatment_traffic_pct == 5.0


def test_a_test_aborted_by_an_operator_ends_the_rollout() -> None:
    tel, clock = Telemetry(), Clock()
    _, manager, rollouts = parts(MemoryStore(), tel, clock)
    rollouts.start(config(), SCHEDULE)
    assert manager.abort_test(NAME, reason="operator stop")
    check = rollouts.check(NAME)
    assert check.status is RolloutStatus.ROLLED_BACK
    assert check.traffic_pct == 0.0
    assert check.changed is None
    assert rollouts.get(NAME).history[-1]["decision"] == "ended_aborted"
    assert sample_value(tel, "rollout_traffic_percent", test=NAME) == 0.0


def test_rollout_refuses_auto_finalize() -> None:
    _, _, rollouts = parts(MemoryStore(), Telemetry(), Clock())
    with pytest.raises(InvalidValueError, match="auto_finalize must be False for a rollout"):
        rollouts.start(config(auto_finalize=True), SCHEDULE)


# -------------------------------------------------------------------- Redis
def _redis_checker(url: str, prefix: str, worker: int, rounds: int, barrier: Any, out: Any) -> None:
    """A service worker: its own store, registry and managers; races check() with the other worker."""
    from mlops_otel.stores.redis import RedisStore

    tel = Telemetry()
    store = RedisStore.from_url(url, prefix=prefix, flush_interval=0.01, telemetry=tel)
    try:
        registry = ModelRegistry(store, telemetry=tel)
        manager = ABTestManager(store, registry, telemetry=tel, refresh_interval=0.0)
        rollouts = RolloutManager(manager, telemetry=tel)
        changes = []
        for _ in range(rounds):
            barrier.wait()  # the parent has fed this round's results
            changes.append(rollouts.check(NAME).changed)
            barrier.wait()
        out.put({"worker": worker, "changes": changes,
                 "counted": sample_value(tel, "rollout_step_changes_total", test=NAME, decision="advance") or 0.0})
    except BaseException as exc:
        out.put({"worker": worker, "error": repr(exc)})
    finally:
        store.close()


@pytest.mark.integration
def test_two_workers_on_redis_change_each_step_exactly_once(redis_service: RedisServer,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from mlops_otel.stores.redis import RedisStore

    prefix = f"ro{uuid.uuid4().hex[:10]}"
    tel, rng = Telemetry(), np.random.default_rng(4)
    store = RedisStore.from_url(redis_service.url, prefix=prefix, flush_interval=0.01, telemetry=tel)
    try:
        schedule = attrs.evolve(SCHEDULE, steps=[attrs.evolve(s, min_seconds=0.0) for s in SCHEDULE.steps])
        registry = ModelRegistry(store, telemetry=tel)
        for v in ("v2.1.0", "v2.2.0"):
            registry.register("gnn", v)
        manager = ABTestManager(store, registry, telemetry=tel, refresh_interval=0.0)
        RolloutManager(manager, telemetry=tel).start(config(), schedule)
        rounds = 4
        barrier, out = SPAWN.Barrier(3), SPAWN.Queue()
        procs = [SPAWN.Process(target=_redis_checker, args=(redis_service.url, prefix, w, rounds, barrier, out))
                 for w in range(2)]
        for p in procs:
            p.start()
        for step in range(rounds):
            feed(manager, (1.0, 5.0, 20.0, 50.0)[step], 320, rng)
            assert manager.flush(30.0)
            barrier.wait(timeout=120)  # both workers check at once
            barrier.wait(timeout=120)
        reports = [out.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all("error" not in r for r in reports), reports
        per_round = list(zip(*(r["changes"] for r in reports), strict=True))
        # Each round, exactly one of the two workers made the change; the other saw it made.
        assert [sorted(c for c in pair if c is not None) for pair in per_round] == [
            ["advance"], ["advance"], ["advance"], ["handover"]]
        assert sum(r["counted"] for r in reports) == 3.0
        history = [h.action for h in registry.history("gnn") if h.action.startswith("rollout_")]
        assert history == ["rollout_start", "rollout_advance", "rollout_advance", "rollout_advance",
                           "rollout_handover"]
        assert manager.get_test(NAME).config.treatment_traffic_pct == 50.0
        # Visible to operators: the CLI (and the API, same view) lists every step change.
        from mlops_otel.cli import main

        capsys.readouterr()
        assert main(["--store", redis_service.url, "--store-prefix", prefix, "--json", "registry", "history",
                     "gnn"]) == 0
        shown = [c for c in json.loads(capsys.readouterr().out) if c["action"].startswith("rollout_")]
        assert [c["action"] for c in shown] == history
        assert "traffic 5%" in shown[1]["reason"]
    finally:
        store.close()


@pytest.mark.integration
def test_a_redis_outage_fails_the_check_loudly_and_the_step_changes_once_after(redis_durable: RedisServer) -> None:
    from mlops_otel.stores import StoreError
    from mlops_otel.stores.redis import RedisStore

    tel, rng = Telemetry(), np.random.default_rng(5)
    store = RedisStore.from_url(redis_durable.url, prefix=f"ro{uuid.uuid4().hex[:10]}", flush_interval=0.01,
                                max_backoff=0.2, socket_timeout=1.0, telemetry=tel)
    try:
        schedule = attrs.evolve(SCHEDULE, steps=[attrs.evolve(s, min_seconds=0.0) for s in SCHEDULE.steps])
        registry = ModelRegistry(store, telemetry=tel)
        for v in ("v2.1.0", "v2.2.0"):
            registry.register("gnn", v)
        manager = ABTestManager(store, registry, telemetry=tel, refresh_interval=0.0)
        rollouts = RolloutManager(manager, telemetry=tel)
        rollouts.start(config(), schedule)
        feed(manager, 1.0, 320, rng)
        assert manager.flush(30.0)
        redis_durable.kill()
        with pytest.raises(StoreError):  # a decision path reports the outage; nothing was decided
            rollouts.check(NAME)
        redis_durable.start()  # same port, acknowledged writes reloaded from the AOF
        checks = [rollouts.check(NAME).changed for _ in range(3)]
        assert checks == ["advance", None, None]
        assert rollouts.get(NAME).step == 1
        assert [h.action for h in registry.history("gnn") if h.action.startswith("rollout_")] == [
            "rollout_start", "rollout_advance"]
        assert sample_value(tel, "rollout_step_changes_total", test=NAME, decision="advance") == 1.0
    finally:
        store.close()


def test_registry_events_are_recorded_once_per_key_and_move_no_role() -> None:
    registry, _, _ = parts(MemoryStore(), Telemetry(), Clock())
    assert registry.record_event("gnn", "rollout_advance", version="v2.2.0", reason="step 2", idempotency_key="k1")
    assert not registry.record_event("gnn", "rollout_advance", version="v2.2.0", reason="again", idempotency_key="k1")
    (entry,) = [h for h in registry.history("gnn") if h.action == "rollout_advance"]
    assert (entry.version, entry.reason, entry.previous_champion) == ("v2.2.0", "step 2", "v2.1.0")
    assert registry.champion_version("gnn") == "v2.1.0"
    assert registry.get_challenger("gnn") is None
    with pytest.raises(InvalidValueError, match="action must be"):
        registry.record_event("gnn", "", reason="x")


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 1500), st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.floats(0.0, 120.0),
       st.sampled_from([0, 1, 2, 3]))
def test_the_step_rule_never_advances_early_and_rolls_back_exactly_on_harm(
        n: int, err_c: float, err_t: float, elapsed: float, step: int) -> None:
    pct = SCHEDULE.steps[step].traffic_pct
    c, t = arms(n, pct, err_t, err_c=err_c)
    verdict = judge_step(c, t, config(), SCHEDULE, step, elapsed)
    current = SCHEDULE.steps[step]
    if verdict.decision in (StepDecision.ADVANCE, StepDecision.HANDOVER):
        assert n >= current.min_results
        assert elapsed >= current.min_seconds
        assert all(e.non_inferior for e in verdict.evaluation.effects if e.verdict != "no data")
        assert (verdict.decision is StepDecision.HANDOVER) == (step == SCHEDULE.last)
    harm = verdict.evaluation.decision.value == "halt" or any(e.verdict == "worse"
                                                               for e in verdict.evaluation.effects)
    assert (verdict.decision is StepDecision.ROLLBACK) == harm

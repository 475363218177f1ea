"""#14: rollouts run by the scheduled evaluator; rollout status/check in the CLI and API; step-aware evaluate."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

import attrs
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mlops_otel import Runtime
from mlops_otel.ab import ABTestManager, ABTestState, RolloutManager, RolloutStatus
from mlops_otel.fastapi._management import management_router
from mlops_otel.registry import ModelRegistry
from mlops_otel.stores import MemoryStore, StateStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer
from .test_rollout import NAME, SCHEDULE, config, feed

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: No minimum time at a step: a healthy step advances as soon as it has its results.
QUICK = attrs.evolve(SCHEDULE, steps=[attrs.evolve(s, min_seconds=0.0) for s in SCHEDULE.steps])


def _wait(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def fleet(redis_service: RedisServer) -> Iterator[tuple[str, StateStore, ABTestManager, list[Telemetry]]]:
    """A feeder (no scheduler) and two service workers with auto-evaluation on, each its own store and telemetry."""
    from mlops_otel.stores.redis import RedisStore

    prefix = f"ra{uuid.uuid4().hex[:10]}"
    stores: list[StateStore] = []
    managers: list[ABTestManager] = []
    tels = [Telemetry() for _ in range(3)]
    try:
        for i, tel in enumerate(tels):
            store = RedisStore.from_url(redis_service.url, prefix=prefix, flush_interval=0.01, telemetry=tel)
            stores.append(store)
            registry = ModelRegistry(store, telemetry=tel)
            if i == 0:
                for v in ("v2.1.0", "v2.2.0"):
                    registry.register("gnn", v)
            managers.append(ABTestManager(store, registry, telemetry=tel, refresh_interval=0.2, sync_interval=0.1,
                                          auto_evaluate_interval=None if i == 0 else 0.2))
        yield prefix, stores[0], managers[0], tels[1:]
    finally:
        for m in managers:
            m.close()
        for s in stores:
            s.close()


def _counted(tels: list[Telemetry], metric: str, **labels: str) -> float:
    return sum(sample_value(t, metric, **labels) or 0.0 for t in tels)


@pytest.mark.integration
def test_the_scheduler_alone_rolls_a_broken_challenger_back_exactly_once(
        fleet: tuple[str, StateStore, ABTestManager, list[Telemetry]], redis_service: RedisServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix, _store, feeder, worker_tels = fleet
    rollouts = RolloutManager(feeder)
    rollouts.start(config(), SCHEDULE)  # step 1 needs 60 s: only harm can end it within this test
    feed(feeder, 1.0, 500, np.random.default_rng(2), err=(0.02, 0.4))
    assert feeder.flush(30.0)
    # Nobody calls check(): the two workers' scheduled evaluator (one lease holder at a time) does.
    assert _wait(lambda: rollouts.get(NAME).status is RolloutStatus.ROLLED_BACK), rollouts.get(NAME)
    assert _wait(lambda: feeder.get_test(NAME).state is ABTestState.ROLLED_BACK)
    time.sleep(1.0)  # several more scheduler rounds on both workers: nothing more may happen
    state = rollouts.get(NAME)
    assert [h["decision"] for h in state.history] == ["start", "rollback"]
    assert state.history[1]["step"] == 0
    assert feeder.registry.champion_version("gnn") == "v2.1.0"
    assert feeder.registry.get_challenger("gnn") is None
    events = [h.action for h in feeder.registry.history("gnn") if h.action.startswith("rollout_")]
    assert events == ["rollout_start", "rollout_rollback"]
    assert _counted(worker_tels, "rollout_step_changes_total", test=NAME, decision="rollback") == 1.0
    assert _counted(worker_tels, "ab_decisions_total", test=NAME, decision="rollback") == 1.0
    assert _counted(worker_tels, "ab_decisions_total", test=NAME, decision="halt") == 0.0  # no SRM halt
    # A scheduler round may judge the step before the feeder's results are all delivered (it then
    # holds: "continue"); the rollback itself is recorded exactly once, and nothing after it.
    decisions = [e["decision"] for e in feeder.evaluation_history(NAME)]
    assert decisions.count("rollback") == 1, decisions
    assert decisions[-1] == "rollback", decisions
    assert set(decisions) <= {"continue", "rollback"}, decisions
    # Operators see it in the CLI.
    from mlops_otel.cli import main

    capsys.readouterr()
    assert main(["--store", redis_service.url, "--store-prefix", prefix, "--json", "ab", "rollout", "status",
                 NAME]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["traffic_pct"], [h["decision"] for h in shown["history"]]) == (
        "rolled_back", 0.0, ["start", "rollback"])
    assert main(["--store", redis_service.url, "--store-prefix", prefix, "ab", "rollout", "status", NAME]) == 0
    text = capsys.readouterr().out
    assert "rolled_back" in text
    assert "rollback" in text


@pytest.mark.integration
def test_the_scheduler_alone_advances_a_healthy_challenger_once(
        fleet: tuple[str, StateStore, ABTestManager, list[Telemetry]]) -> None:
    _prefix, _store, feeder, worker_tels = fleet
    rollouts = RolloutManager(feeder)
    rollouts.start(config(), QUICK)
    feed(feeder, 1.0, 320, np.random.default_rng(5))
    assert feeder.flush(30.0)
    assert _wait(lambda: rollouts.get(NAME).step == 1), rollouts.get(NAME)
    time.sleep(1.0)  # step 2 has no results yet: the schedulers hold
    state = rollouts.get(NAME)
    assert (state.status, state.step, [h["decision"] for h in state.history]) == (
        RolloutStatus.RAMPING, 1, ["start", "advance"])
    assert _wait(lambda: feeder.get_test(NAME).config.treatment_traffic_pct == 5.0)
    assert _counted(worker_tels, "rollout_step_changes_total", test=NAME, decision="advance") == 1.0
    assert _counted(worker_tels, "ab_decisions_total", test=NAME, decision="halt") == 0.0
    assert feeder.get_test(NAME).state is ABTestState.ACTIVE


# ------------------------------------------------------- evaluate, API (one process, memory store)
@pytest.fixture
def served() -> Iterator[tuple[TestClient, Runtime]]:
    runtime = Runtime.create(store=MemoryStore(), fleet_metrics=False)
    for v in ("v2.1.0", "v2.2.0"):
        runtime.registry.register("gnn", v)
    app = FastAPI()
    app.include_router(management_router(lambda: runtime, token=TOKEN), prefix="/mlops")
    with TestClient(app) as client:
        yield client, runtime
    runtime.close()


def test_evaluate_of_a_rollout_test_is_step_aware_not_a_ramp_srm(served: tuple[TestClient, Runtime]) -> None:
    client, runtime = served
    ab, rng = runtime.ab, np.random.default_rng(7)
    rollouts = RolloutManager(ab, telemetry=runtime.telemetry)
    rollouts.start(config(), QUICK)
    feed(ab, 1.0, 320, rng)
    assert client.post(f"/mlops/ab/tests/{NAME}/rollout/check").status_code == 401  # a write: token required
    checked = client.post(f"/mlops/ab/tests/{NAME}/rollout/check", headers=AUTH)
    assert checked.status_code == 200, checked.text
    assert (checked.json()["changed"], checked.json()["step"], checked.json()["traffic_pct"]) == ("advance", 1, 5.0)
    feed(ab, 5.0, 320, rng)  # results at the new split on top of the first step's
    # The whole test's cumulative results mix 1 % and 5 %: the whole-test rule calls that a sample-ratio mismatch.
    assert ab.evaluate_test(NAME).decision.value == "halt"
    halts = sample_value(runtime.telemetry, "ab_decisions_total", test=NAME, decision="halt")
    ev = client.post(f"/mlops/ab/tests/{NAME}/evaluate", headers=AUTH)
    assert ev.status_code == 200, ev.text
    body = ev.json()
    assert body["decision"] != "halt", body
    assert (body["n_treatment"], body["n_control"]) == (320, 6080)  # the current step's results only
    assert body["srm_p_value"] > 0.01
    assert sample_value(runtime.telemetry, "ab_decisions_total", test=NAME, decision="halt") == halts
    status = client.get(f"/mlops/ab/tests/{NAME}/rollout")  # a read: no token
    assert status.status_code == 200, status.text
    ro = status.json()
    assert (ro["status"], ro["step"], ro["steps"], ro["traffic_pct"], ro["changed"]) == ("ramping", 1, 4, 5.0, None)
    assert ro["verdict"]["decision"] == "advance"
    assert ro["verdict"]["n_treatment"] == 320
    assert rollouts.get(NAME).step == 1  # status only judged: it moved nothing
    assert [h["decision"] for h in ro["history"]] == ["start", "advance"]


def test_rollout_endpoints_404_for_unknown_tests_and_tests_without_a_rollout(
        served: tuple[TestClient, Runtime]) -> None:
    client, runtime = served
    assert client.get("/mlops/ab/tests/nope/rollout").status_code == 404
    runtime.ab.start_test(config(name="plain"))
    missing = client.get("/mlops/ab/tests/plain/rollout")
    assert missing.status_code == 404
    assert "no progressive rollout" in missing.text
    assert client.post("/mlops/ab/tests/plain/rollout/check", headers=AUTH).status_code == 404

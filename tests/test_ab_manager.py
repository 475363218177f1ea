"""ABTestManager: configs, the request path, decisions, exactly-once finalize, MemoryStore and Redis."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_otel.ab import (
    ABTestConfig,
    ABTestManager,
    ABTestNotFoundError,
    ABTestState,
    ABTestStateError,
    Decision,
    Guardrails,
    InvalidConfigError,
    assign,
)
from mlops_otel.registry import InvalidValueError, ModelRegistry
from mlops_otel.stores import MemoryStore, StateStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer

DAY = 86_400.0
SPAWN = mp.get_context("spawn")


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class BufferedStore(MemoryStore):
    """A MemoryStore whose increments wait for flush(), like a write-behind store."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[str, dict[str, float]]] = []

    def incr(self, key: str, deltas: Mapping[str, float]) -> None:
        self.pending.append((key, dict(deltas)))

    def flush(self, timeout: float | None = None) -> bool:
        while self.pending:
            key, deltas = self.pending.pop(0)
            super().incr(key, deltas)
        return True


def eventually(check: Any, timeout: float = 20.0) -> None:
    """Poll *check* until it holds (background refreshes run on their own thread)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def make_config(name: str = "gnn_v2.2_test", **kw: Any) -> ABTestConfig:
    base: dict[str, Any] = {"name": name, "model_type": "gnn", "control_version": "v2.1.0",
                            "treatment_version": "v2.2.0", "treatment_traffic_pct": 50.0, "min_samples": 100}
    base.update(kw)
    return ABTestConfig(**base)


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def setup(store: StateStore, tel: Telemetry, clock: Clock, **kw: Any) -> tuple[ModelRegistry, ABTestManager]:
    registry = ModelRegistry(store, telemetry=tel, clock=clock)
    registry.register("gnn", "v2.1.0")
    registry.register("gnn", "v2.2.0")
    return registry, ABTestManager(store, registry, telemetry=tel, clock=clock, **kw)


@pytest.fixture
def parts(tel: Telemetry, clock: Clock) -> tuple[ModelRegistry, ABTestManager]:
    return setup(MemoryStore(), tel, clock)


def feed(manager: ABTestManager, n_users: int, *, conf_lift: float = 0.0, err_treatment: float = 0.05,
         seed: int = 0, prefix: str = "user", test: str = "gnn_v2.2_test") -> dict[str, int]:
    """Assign *n_users* users and record one result each; returns the count per variant."""
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for i in range(n_users):
        a = manager.assign_variant("gnn", f"{prefix}-{i}")
        treated = a["name"] == "treatment"
        conf = float(np.clip(rng.normal(0.8 + (conf_lift if treated else 0.0), 0.1), 0, 1))
        err = bool(rng.random() < (err_treatment if treated else 0.05))
        manager.record_result(test, a["name"], float(rng.normal(50, 5)), conf, err)
        counts[a["name"]] = counts.get(a["name"], 0) + 1
    return counts


# ------------------------------------------------------------------ configs
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"treatment_traffic_pct": 120.0},
         "treatment_traffic_pct must be a finite number in (0, 100), got 120.0"),
        ({"treatment_traffic_pct": 0}, "treatment_traffic_pct must be a finite number in (0, 100), got 0"),
        ({"treatment_traffic_pct": 100}, "treatment_traffic_pct must be a finite number in (0, 100), got 100"),
        ({"treatment_traffic_pct": -5.0}, "treatment_traffic_pct must be a finite number in (0, 100), got -5.0"),
        ({"treatment_traffic_pct": float("nan")}, "treatment_traffic_pct must be a finite number in (0, 100), got nan"),
        ({"treatment_traffic_pct": "10"}, "treatment_traffic_pct must be a finite number in (0, 100), got '10'"),
        ({"treatment_traffic_pct": True}, "treatment_traffic_pct must be a finite number in (0, 100), got True"),
        ({"treatment_traffic_pct": 0.00001},
         "treatment_traffic_pct must be at least 0.0001 and at most 99.9999, got 1e-05"),
        ({"treatment_version": "v2.1.0"}, "treatment_version must be different from control_version, got 'v2.1.0'"),
        ({"name": ""}, "name must be a non-empty string without braces or control characters, got ''"),
        ({"model_type": "  "}, "model_type must be a non-empty string without braces or control characters, got '  '"),
        ({"control_version": "v{2}"}, "control_version must be a non-empty string without braces"),
        ({"treatment_version": None}, "treatment_version must be a non-empty string without braces"),
        ({"duration_days": 0}, "duration_days must be a finite number in (0, 3650], got 0"),
        ({"alpha": 0.0}, "alpha must be a finite number in (0, 0.5], got 0.0"),
        ({"min_samples": 1}, "min_samples must be an integer >= 2, got 1"),
        ({"min_samples": 10.5}, "min_samples must be an integer >= 2, got 10.5"),
        ({"auto_finalize": "yes"}, "auto_finalize must be a bool, got 'yes'"),
        ({"guardrails": Guardrails}, "guardrails must be a Guardrails or a mapping of its fields"),
        ({"guardrails": {"max_latency_increase_pct": -1}},
         "max_latency_increase_pct must be a finite number in [0, 1000], got -1"),
    ],
)
def test_bad_configs_name_field_expectation_and_value(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        make_config(**changes)
    assert str(info.value).startswith(message)
    assert info.value.field in message
    assert isinstance(info.value, ValueError)


def test_config_round_trips_through_json() -> None:
    import json

    cfg = make_config(guardrails={"max_error_rate_increase": 0.01}, auto_finalize=True, salt="s")
    assert ABTestConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert make_config().salt == "gnn_v2.2_test"
    assert make_config(treatment_traffic_pct=10).treatment_fraction == 0.1


def test_start_rejects_unknown_versions(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    _, manager = parts
    with pytest.raises(InvalidConfigError, match=r"treatment_version must be a version registered for model type "
                       r"'gnn' \(registered: v2.1.0, v2.2.0\), got 'v9'"):
        manager.start_test(make_config(treatment_version="v9"))
    with pytest.raises(InvalidConfigError, match="control_version must be a version registered for model type "
                       r"'other' \(registered: none\), got 'v2.1.0'"):
        manager.start_test(make_config(model_type="other"))
    with pytest.raises(InvalidConfigError, match="config must be an ABTestConfig"):
        manager.start_test({"name": "x"})  # type: ignore[arg-type]


def test_start_rejects_archived_versions(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    registry, manager = parts
    registry.archive("gnn", "v2.2.0")
    with pytest.raises(InvalidConfigError, match="treatment_version must be a version of 'gnn' that is not archived"):
        manager.start_test(make_config())


def test_start_rejects_the_champion_as_treatment(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    _, manager = parts
    with pytest.raises(InvalidConfigError, match=r"treatment_version must be a version that is not already the "
                       r"champion of 'gnn', got 'v2\.1\.0'"):
        manager.start_test(make_config(control_version="v2.2.0", treatment_version="v2.1.0"))


def test_one_active_test_per_model_type_and_unique_names(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    registry, manager = parts
    registry.register("gnn", "v2.3.0")
    manager.start_test(make_config())
    with pytest.raises(ABTestStateError, match=r"model type 'gnn' already has an active A/B test 'gnn_v2\.2_test'"):
        manager.start_test(make_config("second", treatment_version="v2.3.0"))
    manager.abort_test("gnn_v2.2_test")
    with pytest.raises(InvalidConfigError, match="name must be a test name not used before"):
        manager.start_test(make_config())
    manager.start_test(make_config("second", treatment_version="v2.3.0"))


def test_a_claim_whose_test_never_appeared_expires(parts: tuple[ModelRegistry, ABTestManager], clock: Clock) -> None:
    _, manager = parts
    # A worker claimed the model type and died before writing its test document.
    assert manager.store.compare_and_set("ab.model:{gnn}:active", {"test": "ghost", "claimed_at": clock.now},
                                         expected_version=0)
    with pytest.raises(ABTestStateError, match="model type 'gnn' is starting A/B test 'ghost'"):
        manager.start_test(make_config())
    clock.now += 60.0
    assert manager.start_test(make_config()).state is ABTestState.ACTIVE


def test_starting_makes_the_treatment_challenger(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    registry, manager = parts
    test = manager.start_test(make_config())
    assert test.state is ABTestState.ACTIVE
    assert test.ends_at - test.started_at == 7 * DAY
    challenger = registry.get_challenger("gnn")
    assert challenger is not None
    assert challenger.version == "v2.2.0"
    assert [t.name for t in manager.list_tests()] == ["gnn_v2.2_test"]
    assert manager.get_test("gnn_v2.2_test") == test
    with pytest.raises(ABTestNotFoundError, match="no A/B test named 'nope'"):
        manager.get_test("nope")


# --------------------------------------------------------------- request path
def test_assign_variant(parts: tuple[ModelRegistry, ABTestManager], tel: Telemetry) -> None:
    _, manager = parts
    assert manager.assign_variant("gnn", "user-42") == {"name": "champion", "version": "v2.1.0", "test": None}
    assert manager.assign_variant("unknown", "user-42") == {"name": "champion", "version": None, "test": None}
    manager.start_test(make_config())
    # Buckets under this test's salt: alice 125669 < 500000 (treatment), user-42 956665 (control).
    assert manager.assign_variant("gnn", "alice") == {
        "name": "treatment", "version": "v2.2.0", "test": "gnn_v2.2_test"}
    assert manager.assign_variant("gnn", "user-42") == {
        "name": "control", "version": "v2.1.0", "test": "gnn_v2.2_test"}
    # No user id: served the champion, outside the test.
    assert manager.assign_variant("gnn", None) == {"name": "champion", "version": "v2.1.0", "test": None}
    assert manager.assign_variant("gnn", "") == {"name": "champion", "version": "v2.1.0", "test": None}
    assert sample_value(tel, "ab_assignments_total", test="gnn_v2.2_test", variant="treatment") == 1.0
    assert sample_value(tel, "ab_assignments_total", test="gnn_v2.2_test", variant="champion") == 2.0
    assert "gnn_v2.2_test" in manager._active_tests  # the seed's idiom keeps working


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.one_of(st.text(min_size=1, max_size=30), st.integers()), min_size=1, max_size=20),
       pct=st.floats(min_value=0.0001, max_value=99.9999))
def test_the_request_path_assigns_what_assign_computes(ids: list[Any], pct: float) -> None:
    """The manager's request path assigns what ``assign()`` computes for any id and split, counted per arm
    (ints as their ``str()``, as ``assign`` does)."""
    tel = Telemetry()
    _, manager = setup(MemoryStore(), tel, Clock())
    cfg = make_config(treatment_traffic_pct=pct)
    manager.start_test(cfg)
    try:
        expected = [str(assign(str(u), cfg)) for u in ids]
        got = [manager.assign_variant("gnn", u)["name"] for u in ids]
        assert got == expected
        for arm in ("control", "treatment"):
            assert sample_value(tel, "ab_assignments_total", test=cfg.name, variant=arm) == \
                (expected.count(arm) or None)
    finally:
        manager.close()


def test_other_workers_tests_are_seen_after_the_refresh_interval(tel: Telemetry, clock: Clock) -> None:
    store = MemoryStore()
    _, starter = setup(store, tel, clock)
    worker = ABTestManager(store, starter.registry, telemetry=tel, clock=clock, refresh_interval=5.0)
    assert worker.assign_variant("gnn", "user-42")["test"] is None
    starter.start_test(make_config())
    assert worker.assign_variant("gnn", "user-42")["test"] is None  # cached view: no store read per call
    clock.now += 5.0  # stale: served as is while the background thread refreshes it
    eventually(lambda: worker.assign_variant("gnn", "user-42")["test"] == "gnn_v2.2_test")
    starter.finalize_test("gnn_v2.2_test", "promote")
    clock.now += 5.0
    eventually(lambda: worker.assign_variant("gnn", "user-42") == {"name": "champion", "version": "v2.2.0",
                                                                    "test": None})


def test_assign_variant_reads_the_store_only_on_refresh(tel: Telemetry, clock: Clock) -> None:
    class Counting(MemoryStore):
        reads = 0

        def get_document(self, key: str) -> Any:
            Counting.reads += 1
            return super().get_document(key)

    _, manager = setup(Counting(), tel, clock)
    manager.start_test(make_config())
    before = Counting.reads
    for i in range(1000):
        manager.assign_variant("gnn", f"u{i}")
    assert Counting.reads == before


def test_record_result_counts_and_validates(parts: tuple[ModelRegistry, ABTestManager], tel: Telemetry) -> None:
    _, manager = parts
    manager.start_test(make_config())
    manager.record_result("gnn_v2.2_test", "control", 12.0, 0.9, False)
    manager.record_result("gnn_v2.2_test", "treatment", 11.0, 0.95, True)
    manager.record_result("gnn_v2.2_test", "treatment", float("nan"), 0.95, False)  # latency left out
    manager.record_result("gnn_v2.2_test", "champion", 11.0, 0.95, False)  # outside the test: ignored
    manager.record_result("gnn_v2.2_test", "bogus", 11.0, 0.95, False)
    manager.record_result("no_such_test", "control", 11.0, 0.95, False)
    manager.record_result("gnn_v2.2_test", "control", 11.0, 0.95, "maybe")  # type: ignore[arg-type]
    manager.sync()  # the background round finds that no_such_test does not exist
    control, treatment = manager.results("gnn_v2.2_test")
    assert (control.n, treatment.n, treatment.errors, treatment.latency_ms.n) == (1, 2, 1, 1)
    assert sample_value(tel, "ab_results_total", test="gnn_v2.2_test", variant="treatment") == 2.0
    for metric in ("ab.inference_time_ms", "ab.variant", "ab.test", "ab.error"):
        assert sample_value(tel, "mlops_invalid_measurements_total", metric=metric) == 1.0, metric


def test_record_result_never_raises(tel: Telemetry, clock: Clock) -> None:
    class Broken(MemoryStore):
        down = False

        def compare_and_set(self, key: str, value: Any, *, expected_version: int) -> bool:
            if self.down:
                raise RuntimeError("store down")
            return super().compare_and_set(key, value, expected_version=expected_version)

    store = Broken()
    _, manager = setup(store, tel, clock)
    manager.start_test(make_config())
    store.down = True
    manager.record_result("gnn_v2.2_test", "control", 12.0, 0.9, False)  # summed in process: no store call
    manager.record_result(None, None, None, None, None)  # type: ignore[arg-type]
    manager.record_result("gnn_v2.2_test", "control", 12.0, 0.9, False, metrics={"x": object()})  # type: ignore[dict-item]
    manager.close()  # publishing to the broken store: counted, not raised
    assert (sample_value(tel, "mlops_telemetry_errors_total", reason="ab.flush") or 0.0) >= 1.0
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="ab.test") == 1.0


def test_evaluate_sees_this_process_pending_writes(tel: Telemetry, clock: Clock) -> None:
    store = BufferedStore()
    _, manager = setup(store, tel, clock)
    manager.start_test(make_config())
    counts = feed(manager, 300)
    result = manager.evaluate_test("gnn_v2.2_test")
    assert (result["n_control"], result["n_treatment"]) == (counts["control"], counts["treatment"])
    assert sample_value(tel, "ab_decisions_total", test="gnn_v2.2_test", decision=result["decision"]) == 1.0


# ------------------------------------------------------------------ decisions
def test_full_flow_on_memory_store(parts: tuple[ModelRegistry, ABTestManager], tel: Telemetry) -> None:
    registry, manager = parts
    manager.start_test(make_config(guardrails={"max_error_rate_increase": 0.05}))
    feed(manager, 4000, conf_lift=0.03)
    result = manager.evaluate_test("gnn_v2.2_test")
    assert result["decision"] == "promote", result["recommendation"]
    assert manager.finalize_test("gnn_v2.2_test", "promote")
    champion = registry.get_champion("gnn")
    assert champion is not None
    assert champion.version == "v2.2.0"
    assert registry.get_challenger("gnn") is None
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.PROMOTED
    assert sample_value(tel, "model_champion", model_type="gnn", model_version="v2.2.0") == 1.0
    assert sample_value(tel, "model_champion", model_type="gnn", model_version="v2.1.0") == 0.0
    assert manager.assign_variant("gnn", "user-42") == {"name": "champion", "version": "v2.2.0", "test": None}
    last = registry.history("gnn")[-1]
    assert (last.action, last.version, last.previous_champion) == ("promote", "v2.2.0", "v2.1.0")
    assert "gnn_v2.2_test" in last.reason


def test_finalize_is_idempotent_and_rejects_the_other_action(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    registry, manager = parts
    manager.start_test(make_config())
    with pytest.raises(InvalidValueError, match="action must be 'promote' or 'rollback', got 'ship it'"):
        manager.finalize_test("gnn_v2.2_test", "ship it")
    assert manager.finalize_test("gnn_v2.2_test", "rollback", reason="treatment too slow")
    assert not manager.finalize_test("gnn_v2.2_test", "rollback")
    with pytest.raises(ABTestStateError, match="is rolled_back"):
        manager.finalize_test("gnn_v2.2_test", "promote")
    champion = registry.get_champion("gnn")
    assert champion is not None
    assert champion.version == "v2.1.0"
    assert registry.get_challenger("gnn") is None
    assert registry.history("gnn")[-1].reason == "treatment too slow"
    with pytest.raises(ABTestNotFoundError):
        manager.finalize_test("nope", "promote")


def test_abort(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    registry, manager = parts
    manager.start_test(make_config())
    assert manager.abort_test("gnn_v2.2_test", reason="wrong model uploaded")
    assert not manager.abort_test("gnn_v2.2_test")
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.ABORTED
    assert registry.get_challenger("gnn") is None
    with pytest.raises(ABTestStateError, match="is aborted"):
        manager.finalize_test("gnn_v2.2_test", "promote")
    assert manager.assign_variant("gnn", "user-42")["test"] is None


def test_concurrent_finalize_moves_roles_exactly_once(parts: tuple[ModelRegistry, ABTestManager],
                                                      tel: Telemetry, clock: Clock) -> None:
    registry, first = parts
    first.start_test(make_config())
    managers = [first] + [ABTestManager(first.store, registry, telemetry=tel, clock=clock) for _ in range(7)]
    barrier = threading.Barrier(len(managers))
    won: list[bool] = []

    def work(m: ABTestManager) -> None:
        barrier.wait()
        won.append(m.finalize_test("gnn_v2.2_test", "promote"))

    threads = [threading.Thread(target=work, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]
    promotions = [h for h in registry.history("gnn") if h.action == "promote" and h.version == "v2.2.0"]
    assert len(promotions) == 1


def test_a_half_done_finalize_is_completed_once(tel: Telemetry, clock: Clock) -> None:
    store = MemoryStore()
    registry, manager = setup(store, tel, clock)

    class CrashOnce(ModelRegistry):
        crashed = False

        def promote(self, *args: Any, **kw: Any) -> bool:
            if not CrashOnce.crashed:
                CrashOnce.crashed = True
                raise ConnectionError("worker died mid-finalize")
            return super().promote(*args, **kw)

    crashing = ABTestManager(store, CrashOnce(store, telemetry=tel, clock=clock), telemetry=tel, clock=clock)
    manager.start_test(make_config())
    with pytest.raises(ConnectionError):
        crashing.finalize_test("gnn_v2.2_test", "promote")
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.FINALIZING
    assert not manager.finalize_test("gnn_v2.2_test", "promote")  # completes the job, did not win it
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.PROMOTED
    assert not crashing.finalize_test("gnn_v2.2_test", "promote")
    promotions = [h for h in registry.history("gnn") if h.action == "promote" and h.version == "v2.2.0"]
    assert len(promotions) == 1


def test_test_ends_at_duration(parts: tuple[ModelRegistry, ABTestManager], clock: Clock) -> None:
    _, manager = parts
    manager.start_test(make_config(duration_days=2))
    feed(manager, 400)
    assert manager.evaluate_test("gnn_v2.2_test")["decision"] == "continue"
    clock.now += 2 * DAY
    assert manager.assign_variant("gnn", "user-42") == {"name": "champion", "version": "v2.1.0", "test": None}
    result = manager.evaluate_test("gnn_v2.2_test")
    assert result["decision"] == "rollback"
    assert result.ended
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.ACTIVE  # no auto_finalize: a human decides
    # A test past its end does not block the model type: the next test can start.
    manager.start_test(make_config(name="gnn_v2.2_retry"))
    assert manager.assign_variant("gnn", "user-42")["test"] == "gnn_v2.2_retry"


def test_auto_finalize(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    registry, manager = parts
    manager.start_test(make_config(auto_finalize=True))
    feed(manager, 3000, err_treatment=0.2)
    assert manager.evaluate_test("gnn_v2.2_test")["decision"] == "rollback"
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.ROLLED_BACK
    assert registry.get_challenger("gnn") is None


def test_auto_finalize_aborts_on_sample_ratio_mismatch(parts: tuple[ModelRegistry, ABTestManager]) -> None:
    _, manager = parts
    manager.start_test(make_config(auto_finalize=True))
    for _ in range(600):
        manager.record_result("gnn_v2.2_test", "control", 10.0, 0.9, False)
    for _ in range(400):
        manager.record_result("gnn_v2.2_test", "treatment", 10.0, 0.9, False)
    result = manager.evaluate_test("gnn_v2.2_test")
    assert result["decision"] == "halt"
    test = manager.get_test("gnn_v2.2_test")
    assert test.state is ABTestState.ABORTED
    assert test.reason is not None
    assert "Halt test" in test.reason


# --------------------------------------------------------------------- Redis
def _redis_worker(url: str, prefix: str, worker: int, users: int, barrier: Any, out: Any) -> None:
    """One service worker: its own store, registry and manager; assigns and records *users* results."""
    from mlops_otel.stores.redis import RedisStore

    tel = Telemetry()
    store = RedisStore.from_url(url, prefix=prefix, flush_interval=0.01, telemetry=tel)
    try:
        registry = ModelRegistry(store, telemetry=tel)
        manager = ABTestManager(store, registry, telemetry=tel)
        barrier.wait()
        rng = np.random.default_rng(worker)
        counts = {"control": 0, "treatment": 0}
        for i in range(users):
            a = manager.assign_variant("gnn", f"w{worker}-user-{i}")
            treated = a["name"] == "treatment"
            conf = float(np.clip(rng.normal(0.83 if treated else 0.8, 0.1), 0, 1))
            manager.record_result(a["test"] or "", a["name"], float(rng.normal(50, 5)), conf, False)
            registry.update_metrics("gnn", a["version"] or "", 50.0, conf, False)
            counts[a["name"]] += 1
        flushed = manager.flush(30.0) and registry.flush(30.0)
        barrier.wait()  # everyone has recorded: now race to finalize
        won = manager.finalize_test("gnn_v2.2_test", "promote")
        out.put({"worker": worker, "counts": counts, "flushed": flushed, "won": won})
    except BaseException as exc:
        out.put({"worker": worker, "error": repr(exc)})
    finally:
        store.close()


@pytest.fixture
def redis_parts(redis_service: RedisServer, tel: Telemetry) -> Iterator[tuple[str, StateStore]]:
    from mlops_otel.stores.redis import RedisStore

    prefix = f"ab{uuid.uuid4().hex[:10]}"
    store = RedisStore.from_url(redis_service.url, prefix=prefix, flush_interval=0.01, telemetry=tel)
    yield prefix, store
    store.close()


@pytest.mark.integration
def test_full_flow_on_redis_with_four_workers(redis_service: RedisServer, redis_parts: tuple[str, StateStore],
                                              tel: Telemetry) -> None:
    prefix, store = redis_parts
    registry = ModelRegistry(store, telemetry=tel)
    registry.register("gnn", "v2.1.0")
    registry.register("gnn", "v2.2.0")
    manager = ABTestManager(store, registry, telemetry=tel)
    manager.start_test(make_config())

    workers, users = 4, 1500
    barrier, out = SPAWN.Barrier(workers), SPAWN.Queue()
    procs = [SPAWN.Process(target=_redis_worker, args=(redis_service.url, prefix, w, users, barrier, out))
             for w in range(workers)]
    for p in procs:
        p.start()
    reports = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert all("error" not in r for r in reports), reports
    assert all(r["flushed"] for r in reports)
    assert sum(r["won"] for r in reports) == 1  # four workers finalized at once: one won

    control = sum(r["counts"]["control"] for r in reports)
    treatment = sum(r["counts"]["treatment"] for r in reports)
    assert control + treatment == workers * users
    c, t = manager.results("gnn_v2.2_test")
    assert (c.n, t.n) == (control, treatment)  # exact: nothing lost or doubled across processes
    result = manager.evaluate_test("gnn_v2.2_test")
    assert (result["n_control"], result["n_treatment"]) == (control, treatment)
    assert result["decision"] == "promote"

    champion = registry.get_champion("gnn")
    assert champion is not None
    assert champion.version == "v2.2.0"
    assert manager.get_test("gnn_v2.2_test").state is ABTestState.PROMOTED
    promotions = [h for h in registry.history("gnn") if h.action == "promote" and h.version == "v2.2.0"]
    assert len(promotions) == 1
    assert registry.get("gnn", "v2.1.0").count + registry.get("gnn", "v2.2.0").count == workers * users


@pytest.mark.integration
def test_redis_flow_sees_other_workers_and_decides(redis_service: RedisServer, redis_parts: tuple[str, StateStore],
                                                   tel: Telemetry, clock: Clock) -> None:
    from mlops_otel.stores.redis import RedisStore

    prefix, store = redis_parts
    _, starter = setup(store, tel, clock)
    other_store = RedisStore.from_url(redis_service.url, prefix=prefix, flush_interval=60.0, telemetry=tel)
    try:
        other = ABTestManager(other_store, ModelRegistry(other_store, telemetry=tel), telemetry=tel, clock=clock)
        assert other.assign_variant("gnn", "user-42")["test"] is None
        starter.start_test(make_config(auto_finalize=True))
        clock.now += 10.0  # past the other worker's refresh interval
        other.refresh()  # (the background thread would do it within a second; be deterministic)
        feed(other, 3000, err_treatment=0.2)
        # Whatever part the other worker has published so far is a consistent cut: never a halt.
        early = starter.evaluate_test("gnn_v2.2_test")
        assert early["decision"] in ("continue", "rollback"), early["recommendation"]
        assert early["n_control"] + early["n_treatment"] <= 3000
        assert other.flush(10.0)
        result = starter.evaluate_test("gnn_v2.2_test")
        assert result["n_control"] + result["n_treatment"] == 3000
        assert result["decision"] == "rollback"
        assert starter.get_test("gnn_v2.2_test").state is ABTestState.ROLLED_BACK
        assert other.evaluate_test("gnn_v2.2_test")["decision"] == Decision.ROLLBACK
    finally:
        other_store.close()

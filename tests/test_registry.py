"""Model registry: versions, roles and history, running metrics, sufficient statistics."""

from __future__ import annotations

import math
import statistics
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_otel.registry import (
    InvalidValueError,
    ModelRegistry,
    Moments,
    RegistryConflictError,
    Role,
    SufficientStats,
    UnknownVersionError,
)
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .strategies import latencies_ms, sufficient_stats, unit_interval


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def registry(tel: Telemetry) -> ModelRegistry:
    return ModelRegistry(MemoryStore(), telemetry=tel, clock=Clock())


def champion_gauge(tel: Telemetry, version: str) -> float | None:
    return sample_value(tel, "model_champion", model_type="gnn", model_version=version)


# ------------------------------------------------------------------ versions
def test_register_and_get(registry: ModelRegistry) -> None:
    mv = registry.register("gnn", "v2.1.0", metadata={"arch": "gat", "layers": 3})
    assert (mv.model_type, mv.version, mv.role) == ("gnn", "v2.1.0", Role.CHAMPION)
    assert dict(mv.metadata) == {"arch": "gat", "layers": 3}
    assert mv.count == 0
    assert math.isnan(mv.error_rate)
    with pytest.raises(TypeError):
        mv.metadata["arch"] = "x"  # type: ignore[index]
    assert registry.get("gnn", "v2.1.0") == mv


def test_first_version_is_champion_later_ones_candidates(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    v2 = registry.register("gnn", "v2")
    assert v2.role is Role.CANDIDATE
    champion = registry.get_champion("gnn")
    assert champion is not None
    assert champion.version == "v1"
    assert registry.get_challenger("gnn") is None
    assert [v.version for v in registry.list_versions("gnn")] == ["v1", "v2"]
    assert registry.model_types() == ["gnn"]


def test_nothing_registered(registry: ModelRegistry) -> None:
    assert registry.get_champion("gnn") is None
    assert registry.list_versions("gnn") == []
    assert registry.history("gnn") == []
    with pytest.raises(UnknownVersionError, match="registered: none"):
        registry.get("gnn", "v1")


def test_duplicate_and_bad_registrations(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    with pytest.raises(InvalidValueError, match="version must be a version not yet registered for 'gnn', got 'v1'"):
        registry.register("gnn", "v1")
    with pytest.raises(InvalidValueError, match="model_type must be a non-empty string"):
        registry.register("", "v1")
    with pytest.raises(InvalidValueError, match=r"version must be .* got 'v\{1\}'"):
        registry.register("gnn", "v{1}")
    with pytest.raises(InvalidValueError, match="metadata must be JSON-serialisable"):
        registry.register("gnn", "v3", metadata={"x": object()})
    with pytest.raises(InvalidValueError, match="metadata must be JSON-serialisable"):
        registry.register("gnn", "v3", metadata={"x": float("nan")})


# --------------------------------------------------------------------- roles
def test_promote_rollback_and_history(registry: ModelRegistry, tel: Telemetry) -> None:
    registry.register("gnn", "v1")
    registry.register("gnn", "v2")
    registry.register("gnn", "v3")
    assert champion_gauge(tel, "v1") == 1.0
    assert registry.promote("gnn", "v2", reason="better confidence")
    assert champion_gauge(tel, "v2") == 1.0
    assert champion_gauge(tel, "v1") == 0.0
    assert registry.promote("gnn", "v3", reason="faster")
    assert not registry.promote("gnn", "v3", reason="again")  # already champion: no-op

    restored = registry.rollback("gnn", reason="v3 crashed")
    assert restored.version == "v2"
    assert registry.rollback("gnn", reason="v2 too").version == "v1"
    with pytest.raises(InvalidValueError, match="previous champion"):
        registry.rollback("gnn", reason="nothing left")
    assert champion_gauge(tel, "v1") == 1.0
    assert champion_gauge(tel, "v3") == 0.0

    changes = [(h.action, h.version, h.previous_champion, h.reason) for h in registry.history("gnn")
               if h.action in ("promote", "rollback")]
    assert changes == [
        ("promote", "v1", None, "first version registered"),
        ("promote", "v2", "v1", "better confidence"),
        ("promote", "v3", "v2", "faster"),
        ("rollback", "v2", "v3", "v3 crashed"),
        ("rollback", "v1", "v2", "v2 too"),
    ]
    times = [h.time for h in registry.history("gnn")]
    assert times == sorted(times)


def test_challenger_role(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    registry.register("gnn", "v2")
    assert registry.set_challenger("gnn", "v2", reason="A/B test")
    challenger = registry.get_challenger("gnn")
    assert challenger is not None
    assert challenger.role is Role.CHALLENGER
    with pytest.raises(InvalidValueError, match="not the champion"):
        registry.set_challenger("gnn", "v1", reason="x")
    assert not registry.clear_challenger("gnn", version="v1", reason="wrong version")
    assert registry.clear_challenger("gnn", version="v2", reason="test over")
    assert registry.get_challenger("gnn") is None
    registry.set_challenger("gnn", "v2", reason="again")
    registry.promote("gnn", "v2", reason="won")
    assert registry.get_challenger("gnn") is None  # promotion consumes the challenger role


def test_archive(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    registry.register("gnn", "v2")
    registry.promote("gnn", "v2", reason="r")
    with pytest.raises(InvalidValueError, match="not the champion"):
        registry.archive("gnn", "v2")
    assert registry.archive("gnn", "v1", reason="retired")
    assert not registry.archive("gnn", "v1")
    assert registry.get("gnn", "v1").role is Role.ARCHIVED
    with pytest.raises(InvalidValueError, match="not archived"):
        registry.promote("gnn", "v1", reason="r")
    with pytest.raises(InvalidValueError, match="previous champion"):
        registry.rollback("gnn", reason="archived versions are not rollback targets")


def test_unknown_version_errors_list_known_ones(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    with pytest.raises(UnknownVersionError, match=r"'v9' of model type 'gnn' is not registered \(registered: v1\)"):
        registry.promote("gnn", "v9", reason="r")


def test_idempotency_key_applies_once(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    registry.register("gnn", "v2")
    assert registry.promote("gnn", "v2", reason="r", idempotency_key="op-1")
    registry.rollback("gnn", reason="undo")
    assert not registry.promote("gnn", "v2", reason="retry", idempotency_key="op-1")
    champion = registry.get_champion("gnn")
    assert champion is not None
    assert champion.version == "v1"


def test_concurrent_role_changes_lose_nothing(registry: ModelRegistry) -> None:
    for v in range(9):
        registry.register("gnn", f"v{v}")
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        registry.promote("gnn", f"v{i + 1}", reason=f"thread {i}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    promotions = [h for h in registry.history("gnn") if h.action == "promote"]
    assert len(promotions) == 9  # first registration + one per thread, none lost to a race
    for _ in range(8):
        registry.rollback("gnn", reason="unwind")
    champion = registry.get_champion("gnn")
    assert champion is not None
    assert champion.version == "v0"


def test_conflict_error_after_many_lost_races(tel: Telemetry) -> None:
    class Contended(MemoryStore):
        def compare_and_set(self, key: str, value: object, *, expected_version: int) -> bool:  # type: ignore[override]
            return False

    with pytest.raises(RegistryConflictError, match="gave up after 64"):
        ModelRegistry(Contended(), telemetry=tel).register("gnn", "v1")


def test_history_is_capped(tel: Telemetry) -> None:
    registry = ModelRegistry(MemoryStore(), telemetry=tel, max_history=5)
    registry.register("gnn", "v1")
    registry.register("gnn", "v2")
    for i in range(10):
        registry.promote("gnn", "v2" if i % 2 == 0 else "v1", reason=str(i))
    history = registry.history("gnn")
    assert len(history) == 5
    assert history[-1].reason == "9"


def test_max_history_must_be_positive() -> None:
    with pytest.raises(InvalidValueError, match="max_history must be an integer >= 1, got 0"):
        ModelRegistry(MemoryStore(), max_history=0)


def test_other_process_gauge_follows_reads(tel: Telemetry) -> None:
    store = MemoryStore()
    writer = ModelRegistry(store, telemetry=Telemetry())
    reader = ModelRegistry(store, telemetry=tel)
    writer.register("gnn", "v1")
    writer.register("gnn", "v2")
    reader.get_champion("gnn")
    assert champion_gauge(tel, "v1") == 1.0
    writer.promote("gnn", "v2", reason="r")
    reader.champion_version("gnn")
    assert champion_gauge(tel, "v2") == 1.0
    assert champion_gauge(tel, "v1") == 0.0


# ----------------------------------------------------------- running metrics
def test_update_metrics(registry: ModelRegistry) -> None:
    registry.register("gnn", "v1")
    lat = [10.0, 12.0, 14.0, 20.0]
    conf = [0.9, 0.8, 0.95, 0.85]
    for i, (x, c) in enumerate(zip(lat, conf, strict=True)):
        registry.update_metrics("gnn", "v1", x, c, error=(i == 3))
    mv = registry.get("gnn", "v1")
    assert mv.count == 4
    assert mv.error_rate == 0.25
    assert mv.latency_mean_ms == pytest.approx(statistics.mean(lat))
    assert mv.latency_variance == pytest.approx(statistics.variance(lat))
    assert mv.confidence_mean == pytest.approx(statistics.mean(conf))
    assert mv.confidence_variance == pytest.approx(statistics.variance(conf))
    assert mv.metrics()["count"] == 4.0


@pytest.mark.parametrize(
    ("latency", "confidence", "error", "rejected"),
    [
        (float("nan"), 0.9, False, "registry.inference_time_ms"),
        (-1.0, 0.9, False, "registry.inference_time_ms"),
        (float("inf"), 0.9, False, "registry.inference_time_ms"),
        ("12", 0.9, False, "registry.inference_time_ms"),
        (12.0, 1.5, False, "registry.confidence"),
        (12.0, float("nan"), False, "registry.confidence"),
        (12.0, True, False, "registry.confidence"),
    ],
)
def test_invalid_values_are_counted_and_left_out(
    registry: ModelRegistry, tel: Telemetry, latency: object, confidence: object, error: bool, rejected: str,
) -> None:
    registry.register("gnn", "v1")
    registry.update_metrics("gnn", "v1", latency, confidence, error)  # type: ignore[arg-type]
    assert sample_value(tel, "mlops_invalid_measurements_total", metric=rejected) == 1.0
    mv = registry.get("gnn", "v1")
    assert mv.count == 1  # the result still counts; only the invalid field is left out
    assert mv.stats.latency_ms.n + mv.stats.confidence.n == 1


def test_invalid_error_flag_skips_the_result(registry: ModelRegistry, tel: Telemetry) -> None:
    registry.register("gnn", "v1")
    registry.update_metrics("gnn", "v1", 12.0, 0.9, "yes")  # type: ignore[arg-type]
    registry.update_metrics("gnn", "v1", 12.0, 0.9, np.bool_(True))  # type: ignore[arg-type]
    registry.update_metrics("gnn", "v1", None, None, 1)  # type: ignore[arg-type]
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="registry.error") == 1.0
    mv = registry.get("gnn", "v1")
    assert (mv.count, mv.stats.errors) == (2, 2)


def test_update_metrics_never_raises(registry: ModelRegistry, tel: Telemetry) -> None:
    registry.update_metrics("g{nn}", "v1", 1.0, 0.5, False)
    registry.update_metrics(None, "v1", 1.0, 0.5, False)  # type: ignore[arg-type]
    assert sample_value(tel, "mlops_invalid_measurements_total", metric="registry.model_version") == 2.0

    class Broken(MemoryStore):
        def incr(self, key: str, deltas: object) -> None:  # type: ignore[override]
            raise RuntimeError("store down")

    broken = ModelRegistry(Broken(), telemetry=tel)
    broken.update_metrics("gnn", "v1", 1.0, 0.5, False)  # buffered: the store is reached on flush
    broken.close()
    assert sample_value(tel, "mlops_telemetry_errors_total", reason="registry.update_metrics") == 1.0


# ------------------------------------------------------ sufficient statistics
@settings(max_examples=200)
@given(sufficient_stats(), sufficient_stats(), sufficient_stats())
def test_merge_is_associative_and_commutative(a: SufficientStats, b: SufficientStats, c: SufficientStats) -> None:
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    assert (left.n, left.errors) == (right.n, right.errors)
    for x, y in ((left.latency_ms, right.latency_ms), (left.confidence, right.confidence)):
        assert x.n == y.n
        assert x.total == pytest.approx(y.total, rel=1e-12, abs=1e-9)
        assert x.total_sq == pytest.approx(y.total_sq, rel=1e-12, abs=1e-9)
    assert a.merge(b).n == b.merge(a).n
    assert a.merge(SufficientStats()) == a


@settings(max_examples=100)
@given(st.lists(st.tuples(latencies_ms, unit_interval, st.booleans()), min_size=2, max_size=40),
       st.integers(min_value=1, max_value=39))
def test_merged_parts_equal_the_whole(results: list[tuple[float, float, bool]], cut: int) -> None:
    def summarise(rows: list[tuple[float, float, bool]]) -> SufficientStats:
        s = SufficientStats()
        for lat, conf, err in rows:
            s = s.observe(lat, conf, err)
        return s

    cut = min(cut, len(results) - 1)
    whole = summarise(results)
    merged = summarise(results[:cut]).merge(summarise(results[cut:]))
    assert merged.n == whole.n == len(results)
    assert merged.errors == sum(e for _, _, e in results)
    lat = [r[0] for r in results]
    assert merged.latency_ms.mean == pytest.approx(statistics.fmean(lat), rel=1e-9, abs=1e-9)
    # Sums of squares lose about eps * sum(x^2) to rounding when parts are rebased onto one shift:
    # at latencies near 60,000 ms that is ~1e-6 absolute, more than a tiny variance's 1e-6 relative.
    rounding = 1e-14 * len(lat) * max(lat) ** 2
    assert merged.latency_ms.variance == pytest.approx(statistics.variance(lat), rel=1e-6, abs=1e-6 + rounding)


def test_counters_round_trip() -> None:
    s = SufficientStats.of([10.0, 20.0, 30.0], [0.1, 0.9], n=4, errors=1)
    assert SufficientStats.from_counters(s.to_counters()) == s
    assert SufficientStats.from_counters({}) == SufficientStats()
    with pytest.raises(ValueError, match="errors must be between 0 and n=2, got 3"):
        SufficientStats.of([1.0, 2.0], errors=3)


def test_merge_rebases_different_shifts() -> None:
    values = [0.7, 0.9, 0.95, 0.85]
    a = Moments.of(values[:2], shift=0.0)
    b = Moments.of(values[2:], shift=0.9)
    merged = a.merge(b)
    assert merged.mean == pytest.approx(statistics.fmean(values))
    assert merged.variance == pytest.approx(statistics.variance(values))
    assert b.merge(a).variance == pytest.approx(statistics.variance(values))


def test_variance_survives_large_means_summed_one_by_one() -> None:
    # Latency 1000 +- 1 ms, 100,000 results added one at a time as the store does:
    # the variance is exact to well below sampling error.
    rng = np.random.default_rng(3)
    x = 1000.0 + rng.standard_normal(100_000)
    totals: dict[str, float] = {}
    for v in x.tolist():
        for key, delta in SufficientStats.deltas(v, 0.9 + 1e-3 * (v - 1000.0), False).items():
            totals[key] = totals.get(key, 0.0) + delta
    s = SufficientStats.from_counters(totals)
    assert s.latency_ms.variance == pytest.approx(float(np.var(x, ddof=1)), rel=1e-6)
    assert s.confidence.variance == pytest.approx(float(np.var(1e-3 * (x - 1000.0), ddof=1)), rel=1e-6)


def test_the_role_reads_include_this_process_results(registry: ModelRegistry) -> None:
    """get_champion()/get_challenger() return the version with every result recorded before the call, as
    get() does (the results wait in a buffer flushed every second, or in the deferred queue)."""
    registry.register("gnn", "v1")
    registry.register("gnn", "v2")
    registry.set_challenger("gnn", "v2", reason="shadow it")
    for _ in range(3):
        registry.update_metrics("gnn", "v1", 10.0, 0.9, error=False)
    registry.update_metrics("gnn", "v2", 20.0, 0.8, error=True)
    champion, challenger = registry.get_champion("gnn"), registry.get_challenger("gnn")
    assert champion is not None
    assert challenger is not None
    assert (champion.version, champion.count, champion.error_rate) == ("v1", 3, 0.0)
    assert (challenger.version, challenger.count, challenger.error_rate) == ("v2", 1, 1.0)


# ------------------------------------------------------------------ the view's refresher
def test_the_view_refresher_wakes_once_per_refresh_interval(monkeypatch: pytest.MonkeyPatch, tel: Telemetry) -> None:
    """#16: the refresher sleeps until its oldest document is due, instead of waking every half interval
    and finding nothing due every other time; each document is still re-read every interval."""
    import time

    from mlops_otel.registry import _registry

    runs: list[float] = []
    reads: list[str] = []
    refresh_due = _registry._DocView.refresh_due

    def counted(view: _registry._DocView) -> float:
        runs.append(time.monotonic())
        return refresh_due(view)

    class Counting(MemoryStore):
        def get_document(self, key: str) -> object:  # type: ignore[override]
            reads.append(key)
            return super().get_document(key)

    monkeypatch.setattr(_registry._DocView, "refresh_due", counted)
    registry = ModelRegistry(Counting(), telemetry=tel, refresh_interval=0.2)
    try:
        registry.register("gnn", "v1")
        time.sleep(0.05)
        runs.clear()
        reads.clear()
        time.sleep(1.0)
        assert len(reads) >= 4  # re-read every 0.2 s
        assert len(runs) <= 7, runs  # about one run per read (waking every 0.1 s: ten)
    finally:
        registry.close()

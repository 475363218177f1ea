"""#11 items 2, 3 and 7 (values): one absurd value cannot poison a batch, labels of any type fold to one
series, one field's invalid value never drops the same call's valid fields; every rejection counted by field."""

from __future__ import annotations

import uuid

import pytest

from mlops_otel.ab import ABTestConfig, ABTestManager
from mlops_otel.registry import ModelRegistry
from mlops_otel.stores import CounterBuffer, MemoryStore, StateStore
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer


def _invalid(tel: Telemetry, metric: str) -> float:
    return sample_value(tel, "mlops_invalid_measurements_total", metric=metric) or 0.0


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_one_absurd_latency_does_not_wipe_a_buffered_batch(backend: str, redis_service: RedisServer) -> None:
    """0.1: 2,001 control results with one latency of 1e200 ms were stored as n=0."""
    tel = Telemetry()
    store: StateStore = (MemoryStore(telemetry=tel) if backend == "memory" else
                         RedisStore.from_url(redis_service.url, prefix=f"v{uuid.uuid4().hex[:8]}", telemetry=tel))
    try:
        registry = ModelRegistry(store, telemetry=tel)
        registry.register("gnn", "v1")
        registry.register("gnn", "v2")
        ab = ABTestManager(store, registry, telemetry=tel)
        ab.start_test(ABTestConfig(name="t", model_type="gnn", control_version="v1", treatment_version="v2"))
        for i in range(2_001):
            latency = 1e200 if i == 1_000 else 10.0
            ab.record_result("t", "control", latency, 0.9, error=False)
            registry.update_metrics("gnn", "v1", latency, 0.9)
        ab.flush()
        control, _ = ab.results("t")
        assert control.n == 2_001  # the result counts; only its absurd latency is left out
        assert control.latency_ms.n == 2_000
        assert control.latency_ms.mean == pytest.approx(10.0)
        assert control.confidence.n == 2_001
        version = registry.get("gnn", "v1")
        assert version.count == 2_001
        assert version.latency_mean_ms == pytest.approx(10.0)
        assert _invalid(tel, "registry.inference_time_ms") == 1.0
    finally:
        store.close()


def test_counter_buffer_rejects_one_add_not_the_batch() -> None:
    tel = Telemetry()
    store = MemoryStore(telemetry=tel)
    rejected: list[tuple[str, float]] = []
    buffer = CounterBuffer(store, ("n", "sq"), on_invalid=lambda f, v: rejected.append((f, v)))
    buffer.add("k", (1.0, 4.0))
    buffer.add("k", (1.0, float("inf")))      # not finite: rejected alone
    buffer.add("k", (1.0, 1.7e308))
    buffer.add("k", (1.0, 1.7e308))           # the sum would overflow: rejected alone
    buffer.add("k", (1.0, 1.0))
    buffer.flush()
    assert store.read_counters("k") == {"n": 3.0, "sq": 4.0 + 1.7e308 + 1.0}
    assert rejected == [("sq", float("inf")), ("sq", 1.7e308)]
    buffer.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_store_incr_that_would_overflow_is_rejected_by_field(backend: str, redis_service: RedisServer) -> None:
    tel = Telemetry()
    store: StateStore = (MemoryStore(telemetry=tel) if backend == "memory" else
                         RedisStore.from_url(redis_service.url, prefix=f"v{uuid.uuid4().hex[:8]}", telemetry=tel,
                                             flush_interval=60.0))
    try:
        store.incr("k", {"n": 1.0, "sq": 1.7e308})
        assert store.flush(5.0)
        store.incr("k", {"n": 1.0, "sq": 1.7e308})  # the stored sum would be inf: refused whole
        assert store.flush(5.0)
        store.incr("k", {"n": 1.0, "sq": 1.0})
        assert store.flush(5.0)
        assert store.read_counters("k") == {"n": 2.0, "sq": 1.7e308 + 1.0}
        assert _invalid(tel, "sq") == 1.0
    finally:
        store.close()


def test_non_string_label_values_keep_every_count() -> None:
    """0.1: three record_gnn_metrics(None, ...) exported a count of 1."""
    tel = Telemetry()
    for _ in range(3):
        tel.record_gnn_metrics(None, 10.0, 0.5, 0.9)  # type: ignore[arg-type]  # the bug's input
    for _ in range(2):
        tel.record_gnn_metrics(7, 10.0, 0.5, 0.9)  # type: ignore[arg-type]
    tel.record_gnn_metrics("7", 10.0, 0.5, 0.9)
    assert sample_value(tel, "gnn_confidence_count", model_version="unknown") == 3.0
    assert sample_value(tel, "gnn_confidence_count", model_version="7") == 3.0  # 7 and "7": one key


def test_invalid_field_never_drops_the_valid_fields_of_the_same_call() -> None:
    """0.1: record_gnn_metrics with a None latency dropped the valid score and confidence."""
    tel = Telemetry()
    tel.record_gnn_metrics("v1", None, 0.5, 0.9)  # type: ignore[arg-type]
    tel.record_gnn_metrics("v1", 12.0, "high", 0.8)  # type: ignore[arg-type]
    tel.record_gnn_metrics("v1", 12.0, 0.4, float("nan"))
    assert sample_value(tel, "gnn_anomaly_score_count", model_version="v1") == 2.0
    assert sample_value(tel, "gnn_confidence_count", model_version="v1") == 2.0
    assert sample_value(tel, "gnn_inference_duration_seconds_count", model_version="v1") == 2.0
    assert _invalid(tel, "gnn_inference_duration") == 1.0
    assert _invalid(tel, "gnn_anomaly_score") == 1.0
    assert _invalid(tel, "gnn_confidence") == 1.0
    assert sample_value(tel, "mlops_telemetry_errors_total", reason="record_gnn_metrics") is None


def test_pending_merge_that_would_overflow_raises_without_merging() -> None:
    from mlops_otel.stores._writebehind import PendingBuffer

    pending = PendingBuffer(100)
    assert pending.add_counts("k", [("n", 1.0), ("sq", 1.7e308)])
    with pytest.raises(OverflowError, match="sq"):
        pending.add_counts("k", [("n", 1.0), ("sq", 1.7e308)])
    assert pending.add_counts("k", [("n", 1.0), ("sq", 1.0)])
    batch = pending.freeze(1)
    assert batch is not None
    assert batch.counters == {"k": {"n": 2.0, "sq": 1.7e308 + 1.0}}

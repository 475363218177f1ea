"""Writes deferred off the request path (``mlops_otel.telemetry.Deferred``, #16): applied in order, before
every read, in the background, never lost, never on the request thread."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from mlops_otel import Runtime, Settings, semconv
from mlops_otel.stats import VECTOR_MIN
from mlops_otel.telemetry import Deferred, Telemetry
from mlops_otel.testing import sample_value, samples
from mlops_otel.validation import InvalidValueError

from .test_prediction import (  # noqa: F401  # fresh_default: autouse
    TEST,
    _five_calls,
    _recorded,
    _same,
    fresh_default,
    ready,
    runtime_pair,
)


def _wait(predicate: Any, timeout: float = 30.0) -> None:
    """Poll until *predicate()* (a generous deadline for a loaded CI machine; not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# ------------------------------------------------------------------- the queue itself
@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.one_of(st.integers(0, 1000), st.just("apply")), max_size=60))
def test_writes_are_applied_in_order_whatever_the_interleaving_of_applies(ops: list[int | str]) -> None:
    seen: list[int] = []
    deferred = Deferred(lambda reason, exc: None)
    try:
        queued: list[int] = []
        for op in ops:
            if op == "apply":
                deferred.apply()
                assert seen == queued  # an apply that returns has applied everything queued before it
            else:
                assert isinstance(op, int)
                deferred.defer(seen.append, op)
                queued.append(op)
        deferred.apply()
        assert seen == queued
        assert deferred.pending == 0
    finally:
        deferred.close()


def test_the_background_thread_applies_without_a_read() -> None:
    seen: list[int] = []
    deferred = Deferred(lambda reason, exc: None, interval=0.01)
    try:
        for i in range(100):
            deferred.defer(seen.append, i)
        _wait(lambda: deferred.pending == 0)
        assert seen == list(range(100))
        names = {t.name for t in threading.enumerate()}
        assert "mlops-otel-deferred" in names
    finally:
        deferred.close()


def test_a_full_queue_is_applied_by_the_writer_and_close_applies_the_rest() -> None:
    """Memory stays bounded when the drainer cannot keep up; nothing is dropped."""
    seen: list[int] = []
    deferred = Deferred(lambda reason, exc: None, interval=3600.0, limit=10)
    for i in range(25):
        deferred.defer(seen.append, i)
        assert deferred.pending < 10
    assert seen == list(range(20))  # applied inline twice, at 10 and 20 queued
    deferred.close()
    assert seen == list(range(25))
    deferred.defer(seen.append, 25)  # after close: applied at once
    assert seen == list(range(26))


def test_a_failing_write_is_reported_and_the_others_still_apply() -> None:
    faults: list[tuple[str, BaseException]] = []
    seen: list[int] = []
    deferred = Deferred(lambda reason, exc: faults.append((reason, exc)))

    def boom() -> None:
        raise RuntimeError("broken write")

    deferred.defer(seen.append, 1)
    deferred.defer(boom)
    deferred.defer(seen.append, 2)
    deferred.apply()
    deferred.close()
    assert seen == [1, 2]
    assert [(r, str(e)) for r, e in faults] == [("deferred", "broken write")]


def test_concurrent_writers_and_readers_lose_nothing() -> None:
    total = 0
    lock = threading.Lock()

    def add(n: int) -> None:
        nonlocal total
        with lock:
            total += n

    deferred = Deferred(lambda reason, exc: None, interval=0.005)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            deferred.apply()

    def writer() -> None:
        for _ in range(5000):
            deferred.defer(add, 1)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer) for _ in range(4)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    deferred.apply()
    deferred.close()
    assert total == 20_000


@pytest.mark.parametrize(("field", "kwargs"), [("interval", {"interval": 0}), ("interval", {"interval": True}),
                                               ("limit", {"limit": 0}), ("limit", {"limit": 1.5})])
def test_settings_are_validated(field: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidValueError) as info:
        Deferred(lambda reason, exc: None, **kwargs)
    assert info.value.field == field


# ------------------------------------------------------------------ the integration paths
def _runtime(**kwargs: Any) -> Runtime:
    return ready(Runtime.create(Settings(drift={"check_interval": None}), **kwargs))


def test_no_prediction_records_on_its_request_thread_without_a_span() -> None:
    """Without a recording span the registry, A/B, drift and metric writes run on another thread; the request
    thread only queues them (the first prediction of a version makes its handle on the immediate path)."""
    rt = _runtime()
    try:
        threads: list[int] = []
        registry_update, registry_update_many = rt.registry._update_checked, rt.registry._update_checked_many

        def counting_update(*args: Any) -> None:
            threads.append(threading.get_ident())
            registry_update(*args)

        def counting_update_many(key: str, latencies: Any, confidences: Any) -> None:
            threads.extend([threading.get_ident()] * len(latencies))
            registry_update_many(key, latencies, confidences)

        with rt.prediction("gnn", user_id="warm-a") as p:  # the handles: made on the immediate path
            p.observe(anomaly_score=0.5, confidence=0.9, inference_time_ms=2.0)
        for handle in rt._prediction_handles.values():
            handle.update = counting_update
            handle.update_many = counting_update_many
        request_thread: list[int] = []

        def requests() -> None:
            request_thread.append(threading.get_ident())
            for i in range(300):
                with rt.prediction("gnn", user_id=f"user-{i}") as p:
                    p.observe(anomaly_score=0.5, confidence=0.9, inference_time_ms=2.0)

        t = threading.Thread(target=requests)
        t.start()
        t.join()
        _wait(lambda: rt.telemetry.deferred.pending == 0)
        handled = sum(1 for i in range(300) if rt.ab._assign("gnn", f"user-{i}")[1] in {
            h.version for h in rt._prediction_handles.values() if h.update is counting_update})
        assert len(threads) == handled > 0
        assert request_thread[0] not in threads
    finally:
        rt.close()


def test_every_read_sees_the_predictions_made_before_it() -> None:
    """Reads and decisions apply the queue first: registry, A/B results, drift windows and /metrics are
    complete the moment the predictions returned, whatever the background thread did meanwhile."""
    rt = _runtime()
    try:
        n = 2000
        for i in range(n):
            with rt.prediction("gnn", user_id=f"user-{i}") as p:
                p.observe(anomaly_score=0.25, confidence=0.75, inference_time_ms=3.0)
        stats = {v: rt.registry.get("gnn", v).count for v in ("v2.1.0", "v2.2.0")}
        assert sum(stats.values()) == n
        control, treatment = rt.ab.results(TEST)
        assert control.n + treatment.n == n
        windows = {v: rt.drift.get_detector("gnn", v).accepted_samples for v in ("v2.1.0", "v2.2.0")}
        assert windows == stats
        count = sample_value(rt.telemetry, "diagnosis_duration_seconds_count", stage="gnn_inference")
        assert count == n
        assert sum(v for k, v in samples(rt.telemetry).items() if k[0] == "ab_results_total") == n
    finally:
        rt.close()


def test_close_applies_what_is_queued() -> None:
    rt = _runtime()
    store = rt.store
    for i in range(50):
        with rt.prediction("gnn", user_id=f"user-{i}") as p:
            p.observe(anomaly_score=0.25, confidence=0.75, inference_time_ms=3.0)
    rt.close()
    assert rt.telemetry.deferred.pending == 0
    assert store is not None


def test_a_recording_span_keeps_the_immediate_path() -> None:
    """With a sampled span the writes happen on the request thread (exemplars and span attributes need it)."""
    rt = _runtime(tracer_provider=TracerProvider())
    try:
        with rt.prediction("gnn", user_id="warm") as p:
            p.observe(anomaly_score=0.25, confidence=0.75, inference_time_ms=3.0)
        threads: list[int] = []
        for handle in rt._prediction_handles.values():
            update = handle.update

            def counting(*args: Any, _update: Any = update) -> None:
                threads.append(threading.get_ident())
                _update(*args)

            handle.update = counting
        for i in range(20):
            with rt.prediction("gnn", user_id="warm") as p:
                p.observe(anomaly_score=0.25, confidence=0.75, inference_time_ms=3.0)
            assert len(threads) == i + 1  # recorded before the block returned
        assert set(threads) == {threading.get_ident()}
    finally:
        rt.close()


def test_request_scope_and_stage_without_span_are_deferred_and_complete_on_read() -> None:
    tel = Telemetry()
    try:
        @tel.track_diagnosis_request("create_diagnosis")
        def handler() -> None:
            with tel.track_stage("rag_generation", "rag-1"):
                pass

        for _ in range(10):
            handler()
        assert sample_value(tel, "diagnosis_requests_total", status="success", model_version="unknown") == 10
        assert sample_value(tel, "diagnosis_duration_seconds_count", stage="create_diagnosis") == 10
        assert sample_value(tel, "diagnosis_duration_seconds_count", stage="rag_generation") == 10
    finally:
        tel.close()


def test_a_deferred_write_applied_inside_another_request_does_not_take_its_context() -> None:
    """A read inside a request applies other requests' writes: none of them may label this request or
    attach an exemplar of its span."""
    rt = _runtime()
    try:
        with rt.prediction("gnn", user_id="warm") as p:
            p.observe(anomaly_score=0.5, confidence=0.9, inference_time_ms=2.0)
        for i in range(20):
            with rt.prediction("gnn", user_id=f"user-{i}") as p:
                p.observe(anomaly_score=0.5, confidence=0.9, inference_time_ms=2.0)

        @rt.telemetry.track_diagnosis_request("other_request")
        def other() -> None:
            rt.registry.flush()  # a read: applies the queue on this request's thread

        other()
        assert sample_value(rt.telemetry, "diagnosis_requests_total", status="success",
                            model_version="unknown") == 1
    finally:
        rt.close()


def test_a_read_waits_for_the_write_the_background_thread_is_applying() -> None:
    """apply() returns only once a write already taken off the queue by the background thread is done."""
    seen: list[int] = []
    running = threading.Event()

    def slow_write() -> None:
        running.set()
        time.sleep(0.2)
        seen.append(1)

    deferred = Deferred(lambda reason, exc: None, interval=0.01)
    try:
        deferred.defer(slow_write)
        assert running.wait(30)
        assert deferred.pending == 0  # off the queue, not finished
        deferred.apply()
        assert seen == [1]
    finally:
        deferred.close()


def test_a_thread_that_cannot_start_never_fails_the_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_otel._worker import PeriodicWorker

    def refuse(self: Any) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(PeriodicWorker, "start", refuse)
    faults: list[str] = []
    seen: list[int] = []
    deferred = Deferred(lambda reason, exc: faults.append(f"{reason}: {exc}"))
    deferred.defer(seen.append, 1)  # no exception: applied here
    deferred.defer(seen.append, 2)  # and from now on at once, without retrying the thread
    assert seen == [1, 2]
    assert faults == ["deferred.thread: can't start new thread"]
    deferred.close()


def test_after_the_runtime_closed_writes_are_applied_at_once() -> None:
    rt = _runtime()
    rt.close()
    seen: list[int] = []
    rt.telemetry.deferred.defer(seen.append, 1)
    assert seen == [1]


def _values(bounds: tuple[float, ...], lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats in [lo, hi], often exactly on a bucket bound (where bisect and numpy must agree)."""
    return st.one_of(st.sampled_from([b for b in bounds if lo <= b <= hi]), st.floats(lo, hi))


_MS_BOUNDS = tuple(b * 1000.0 for b in semconv.GNN_INFERENCE_DURATION.buckets)


@settings(max_examples=15, deadline=None)
@given(cases=st.lists(st.tuples(_values(_MS_BOUNDS, 0.0, 5000.0), _values(semconv.GNN_CONFIDENCE.buckets, 0.0, 1.0),
                                _values(semconv.GNN_ANOMALY_SCORE.buckets, 0.0, 1.0), st.integers(0, 30)),
                      min_size=8, max_size=80))
def test_a_batch_of_deferred_predictions_records_what_the_single_calls_record(
        cases: list[tuple[float, float, float, int]]) -> None:
    """Many predictions of one version applied together (summed per part, one lock round each) record what
    the single public calls record one by one, up to the order of float summation."""
    _check_batch(cases)


@pytest.mark.parametrize(("seed", "max_label_values"), [(0, 100), (1, 100), (2, 1)])
def test_a_large_batch_is_summed_with_numpy_and_records_the_same(seed: int, max_label_values: int) -> None:
    """From stats.VECTOR_MIN records of a version on, the batch's sums and histogram buckets are computed with
    numpy: the same bucket counts (values on the bounds included), minimum and maximum, sums up to rounding;
    with one label value allowed, the other version's batch goes to the folded series one by one."""
    rng = random.Random(seed)

    def pick(bounds: tuple[float, ...], lo: float, hi: float) -> float:
        inside = [b for b in bounds if lo <= b <= hi]
        return rng.choice(inside) if rng.random() < 0.3 else rng.uniform(lo, hi)

    cases = [(pick(_MS_BOUNDS, 0.0, 5000.0), pick(semconv.GNN_CONFIDENCE.buckets, 0.0, 1.0),
              pick(semconv.GNN_ANOMALY_SCORE.buckets, 0.0, 1.0), rng.randrange(40)) for _ in range(6 * VECTOR_MIN)]
    _check_batch(cases, max_label_values)


def _check_batch(cases: list[tuple[float, float, float, int]], max_label_values: int = 100) -> None:
    with runtime_pair(Settings(drift={"check_interval": None}, max_label_values=max_label_values)) as (one, five):
        one.telemetry.deferred.close()  # (reopened below) no background thread: the whole list is one batch
        one.telemetry.deferred = Deferred(one.telemetry._agg.fault, interval=3600.0)
        for latency, confidence, score, user in cases:
            with one.prediction("gnn", user_id=f"user-{user}") as p:
                p.observe(anomaly_score=score, confidence=confidence, inference_time_ms=latency)
            _five_calls(five, f"user-{user}", latency, confidence, False, score=score)
        assert one.telemetry.deferred.pending == 1  # the first prediction of each version is immediate
        for version in ("v2.1.0", "v2.2.0"):
            assert _same(one.registry.get("gnn", version).stats, five.registry.get("gnn", version).stats)
            d1, d5 = one.drift.detectors().get(f"gnn:{version}"), five.drift.detectors().get(f"gnn:{version}")
            assert (d1 and d1.accepted_samples) == (d5 and d5.accepted_samples)
        assert _same(one.ab.results(TEST), five.ab.results(TEST))
        assert _same(_recorded(one), _recorded(five))
        assert b"np." not in one.telemetry.render_prometheus()  # plain floats only, never a numpy repr

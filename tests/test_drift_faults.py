"""Drift detection under workers and faults, on a real redis-server.

Each test failed on 0.1: the reference race between two workers, the store
restarted empty, and two model versions whose names collide in one key.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import numpy as np
import pytest

from mlops_otel.drift import DriftDetector, DriftLevel, DriftMonitor, parse_detector_key
from mlops_otel.stores import JSONValue, StateStore
from mlops_otel.stores.redis import RedisStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer

pytestmark = pytest.mark.integration


def redis_store(server: RedisServer, prefix: str, tel: Telemetry) -> RedisStore:
    return RedisStore.from_url(server.url, prefix=prefix, flush_interval=0.01, telemetry=tel)


@pytest.fixture
def tel() -> Telemetry:
    return Telemetry()


@pytest.fixture
def prefix() -> str:
    return f"drift-{uuid.uuid4().hex[:8]}"


def traffic(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(rng.normal(0.3 + shift, 0.08, n), 0, 1), np.clip(rng.normal(0.9, 0.04, n), 0, 1)


class BeforeCandidates:
    """A real RedisStore that runs *hook* once, just before its first read of the reference candidates.

    It injects the interleaving of the race (another worker freezing the
    reference between this worker's read of the pointer and of the candidates);
    every call still goes to the real server.
    """

    def __init__(self, store: RedisStore, hook: Callable[[], None]) -> None:
        self._store = store
        self._hook: Callable[[], None] | None = hook

    def read_window(self, key: str) -> list[JSONValue]:
        if "reference_candidates" in key and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return self._store.read_window(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def two_stores(redis_service: RedisServer, prefix: str, tel: Telemetry) -> Iterator[list[RedisStore]]:
    stores = [redis_store(redis_service, prefix, tel) for _ in range(2)]
    yield stores
    for s in stores:
        s.close()


def test_reference_race_the_loser_reads_the_winners_reference(two_stores: list[RedisStore], tel: Telemetry) -> None:
    rng = np.random.default_rng(1)
    winner = DriftDetector("gnn", "v1", store=two_stores[0], telemetry=tel, window_size=200, check_every=None)
    loser_store = BeforeCandidates(two_stores[1], lambda: winner.get_drift_report())
    loser = DriftDetector("gnn", "v1", store=cast(StateStore, loser_store), telemetry=tel, window_size=200,
                          check_every=None)
    for d in (winner, loser):
        d.add_production_samples(*traffic(rng, 200))
        d.flush()
    # The loser reads "no reference", then (hook) the winner freezes it and deletes the candidates,
    # then the loser reads the candidates: gone. It must read the pointer again, not give up.
    report = loser.get_drift_report()
    assert report.reference_source == "production"
    assert report.level is not DriftLevel.INSUFFICIENT_DATA
    assert report.reference_samples == winner.get_drift_report().reference_samples == 200


def test_store_restarted_empty_gets_the_reference_back(redis_fresh: RedisServer, prefix: str, tel: Telemetry,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(2)
    store = redis_store(redis_fresh, prefix, tel)
    other = redis_store(redis_fresh, prefix, tel)
    try:
        a = DriftDetector("gnn", "v1", store=store, telemetry=tel, window_size=500, check_every=None)
        b = DriftDetector("gnn", "v1", store=other, telemetry=tel, window_size=500, check_every=None)
        a.add_production_samples(*traffic(rng, 500))
        assert a.get_drift_report().reference_source == "production"
        assert b.get_drift_report().reference_source == "production"
        redis_fresh.kill()
        redis_fresh.start()  # empty: no persistence
        caplog.set_level(logging.WARNING, logger="mlops_otel.drift")
        for _ in range(3):
            a.add_production_samples(*traffic(rng, 250, shift=0.08))  # 1 sd: drift
            b.add_production_samples(*traffic(rng, 250, shift=0.08))
            ra, rb = a.get_drift_report(), b.get_drift_report()
        assert (ra.reference_source, rb.reference_source) == ("production", "production")
        assert ra.alert_triggered
        assert rb.alert_triggered
        assert ra.reference_samples == 500
        restored = sample_value(tel, "mlops_drift_reference_restored_total", model_type="gnn", model_version="v1")
        assert restored == 1.0  # one worker wrote it back; the other read it
        messages = [r.getMessage() for r in caplog.records if "lost the reference" in r.getMessage()]
        assert len(messages) == 1, messages
    finally:
        store.close()
        other.close()


@pytest.mark.parametrize("names", [(("gnn:edge", "v1"), ("gnn", "edge:v1")), (("a%3Ab", "c"), ("a:b", "c"))])
def test_names_that_join_alike_get_separate_detectors_and_keys(
        redis_service: RedisServer, prefix: str, tel: Telemetry, names: Sequence[tuple[str, str]]) -> None:
    store = redis_store(redis_service, prefix, tel)
    try:
        monitor = DriftMonitor(store, telemetry=tel, window_size=200, check_interval=None)
        first, second = (monitor.get_detector(*n) for n in names)
        assert first is not second
        assert not set(first.store_keys()) & set(second.store_keys())
        assert [parse_detector_key(d.key) for d in (first, second)] == list(names)
        first.set_reference(anomaly_scores=np.linspace(0, 0.5, 200), confidences=np.linspace(0.8, 1, 200))
        second.add_production_samples(*traffic(np.random.default_rng(3), 200))
        assert second.get_drift_report().reference_source != "explicit"
        assert first.get_drift_report().reference_source == "explicit"
        assert set(monitor.detectors()) == {first.key, second.key}
    finally:
        store.close()


def test_state_loss_listener_restores_the_reference_without_a_report(redis_fresh: RedisServer, prefix: str,
                                                                      tel: Telemetry) -> None:
    import time

    store = RedisStore.from_url(redis_fresh.url, prefix=prefix, flush_interval=0.01, epoch_interval=0.2,
                                telemetry=tel)
    try:
        d = DriftDetector("gnn", "v1", store=store, telemetry=tel, window_size=200, check_every=None)
        d.add_production_samples(*traffic(np.random.default_rng(4), 200))
        assert d.get_drift_report().reference_source == "production"
        pointer = next(k for k in d.store_keys() if k.endswith("}:reference"))
        redis_fresh.kill()
        redis_fresh.start()
        deadline = time.monotonic() + 20
        restored = None
        while time.monotonic() < deadline and restored is None:
            time.sleep(0.1)
            try:
                restored = store.get_document(pointer)
            except Exception:  # the client reconnects
                restored = None
        assert restored is not None  # written back by the listener: no report, no local check ran
        assert sample_value(tel, "mlops_drift_reference_restored_total", model_type="gnn",
                            model_version="v1") == 1.0
    finally:
        store.close()

"""#11 item 1 (and 6 end to end): the example service on uvicorn (real HTTP) over a real redis-server.

* No store I/O on request threads (uvicorn's event loop and the threadpool), counted by a wrapper
  around the service's store, in steady state and while Redis is stalled.
* Chaos: SIGSTOP/SIGCONT, DEBUG SLEEP, kill -9 and restart with and without data (AOF), restart
  empty. Under each the service keeps answering 200 with the promoted champion (never the fallback).

Latency under each fault is measured by benchmarks/bench_chaos.py (no wall-clock asserts here).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks._chaos import ChaosService, chaos_service, summarize
from mlops_otel.testing import sample_value

pytestmark = pytest.mark.integration

CHAMPION = "v2.2.0"  # promoted at start: the example's fallback is v2.1.0, so a None would show


@pytest.fixture(scope="module")
def service() -> Iterator[ChaosService]:
    with chaos_service(clients=4, champion=CHAMPION) as svc:
        svc.phase(None, steady=1.0)  # warm up: views loaded, threads started
        yield svc


@pytest.fixture(scope="module")
def request_thread_calls(service: ChaosService) -> dict[str, dict[tuple[str, str], int]]:
    """Store calls on request threads: 6 s steady (longer than the A/B view's 5 s refresh) and a 3 s SIGSTOP."""
    service.store.reset()
    service.scrapes.clear()
    steady, began, ended = service.phase(None, steady=6.0)
    assert summarize(steady, began, ended)["errors"] == 0
    counts = {"steady": service.store.request_calls()}
    service.store.reset()
    stalled, began, ended = service.phase(lambda: service.redis.pause(3.0))
    assert summarize(stalled, began, ended)["errors"] == 0
    counts["outage"] = service.store.request_calls()
    assert service.scrapes  # /metrics (the fleet view) was scraped during both phases
    assert set(service.scrapes) == {200}
    return counts


def _without(calls: dict[tuple[str, str], int], *areas: str) -> dict[tuple[str, str], int]:
    return {k: n for k, n in calls.items() if k[0] not in areas}


def test_no_store_io_on_request_threads_outside_ab_and_drift(
        request_thread_calls: dict[str, dict[tuple[str, str], int]]) -> None:
    """Registry, telemetry, fleet, stores, management: zero store calls on a request thread."""
    assert _without(request_thread_calls["steady"], "ab", "drift") == {}
    assert _without(request_thread_calls["outage"], "ab", "drift") == {}


def test_no_store_io_on_request_threads_at_all(request_thread_calls: dict[str, dict[tuple[str, str], int]]) -> None:
    """The whole SDK, A/B and drift included: zero store calls on a request thread, steady or in an outage."""
    assert request_thread_calls["steady"] == {}
    assert request_thread_calls["outage"] == {}


def _check(service: ChaosService, result: tuple[list[Any], float, float]) -> dict[str, Any]:
    summary = summarize(*result)
    assert summary["requests"] > 0
    assert summary["errors"] == 0, summary
    assert summary["versions"] == [CHAMPION], summary
    return summary


def _lost(service: ChaosService) -> float:
    return sample_value(service.runtime.telemetry, "mlops_store_state_lost_total", store="redis") or 0.0


def test_sigstop(service: ChaosService) -> None:
    _check(service, service.phase(lambda: service.redis.pause(3.0)))


def test_debug_sleep(service: ChaosService) -> None:
    _check(service, service.phase(lambda: service.redis.debug_sleep(2.0)))


def test_kill9_restart_with_data(service: ChaosService) -> None:
    service.redis.enable_aof()
    lost = _lost(service)
    _check(service, service.phase(service.redis.restart_with_data, after=2.0))
    assert _lost(service) == lost  # the data came back: not a loss
    assert service.runtime.registry.champion_version("gnn") == CHAMPION


@pytest.mark.parametrize("restart", ["restart_without_data", "restart_empty"])
def test_restart_without_data(service: ChaosService, restart: str) -> None:
    lost = _lost(service)
    _check(service, service.phase(getattr(service.redis, restart), after=2.0))
    assert _lost(service) == lost + 1
    # Restored to the store, so every worker (and the CLI) sees the champion again.
    assert service.runtime.registry.champion_version("gnn") == CHAMPION

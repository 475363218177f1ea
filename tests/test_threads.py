"""One background-thread policy: every thread a runtime starts is a PeriodicWorker's, and all of them end.

The scenario runs in a fresh interpreter (threads of other tests' runtimes would otherwise be
seen) against the real Redis of the session: a runtime with registry, A/B test, drift monitor,
fleet view and a Redis store serves predictions; then every live non-main thread must be a
``WorkerThread`` named ``mlops-otel-*``, and none may be left after ``Runtime.close()``, nor after
the runtime is dropped without ``close()`` and garbage collected.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import textwrap
import time
import uuid
import weakref
from collections.abc import Callable

import pytest

from mlops_otel import DriftSettings
from mlops_otel._worker import PeriodicWorker, WorkerThread, fault_hook, slot_offset, until_beat
from mlops_otel.drift import DriftMonitor
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry
from mlops_otel.testing import sample_value

from .services import RedisServer

SCRIPT = textwrap.dedent('''
    import gc, json, sys, threading, time
    from mlops_otel import Runtime, Settings
    from mlops_otel._worker import WorkerThread
    from mlops_otel.ab import ABTestConfig

    url, prefix, how = sys.argv[1], sys.argv[2], sys.argv[3]

    def others():
        return [t for t in threading.enumerate() if t is not threading.main_thread()]

    def wait_gone(deadline_s=30.0):
        end = time.monotonic() + deadline_s
        while others() and time.monotonic() < end:
            gc.collect()
            time.sleep(0.05)
        return sorted(t.name for t in others())

    def build():
        rt = Runtime.create(Settings(drift={"check_interval": 0.05}), store=url, store_prefix=prefix,
                            fleet_metrics=True)
        rt.registry.register("gnn", "v1")
        rt.registry.register("gnn", "v2")
        rt.ab.start_test(ABTestConfig(name="t", model_type="gnn", control_version="v1",
                                      treatment_version="v2", treatment_traffic_pct=50.0))
        for i in range(400):
            with rt.prediction("gnn", user_id=f"u{i}") as p:
                p.observe(anomaly_score=(i % 10) / 10, confidence=0.9)
        rt.registry.champion_view("gnn")
        rt.store.flush()
        time.sleep(0.3)  # let the drift checker and the view refreshers run once
        return rt

    rt = build()
    live = others()
    report = {"names": sorted({t.name for t in live}),
              "foreign": sorted(t.name for t in live
                                if not (isinstance(t, WorkerThread) and t.name.startswith("mlops-otel-")))}
    if how == "close":
        rt.close()
        del rt
    else:
        del rt  # never closed: the owners are collected and their threads exit
    report["left"] = wait_gone()
    print(json.dumps(report))
''')


@pytest.mark.parametrize("how", ["close", "gc"])
def test_every_runtime_thread_is_a_periodic_worker_and_all_end(redis_service: RedisServer, how: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, redis_service.url, f"thr-{uuid.uuid4().hex}", how],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["foreign"] == []
    # The owners that run in the background with this runtime (the drift off-path thread starts
    # only when a detector has store I/O to do, so it is allowed but not required). On Redis the
    # registry's counter buffer is flushed by the store's flusher: no thread of its own. Predictions
    # without a span queue their writes for the telemetry's deferred-write thread (#16).
    expected = {"mlops-otel-redis-flusher", "mlops-otel-fleet", "mlops-otel-ab", "mlops-otel-registry-view",
                "mlops-otel-drift-check", "mlops-otel-deferred"}
    assert expected <= set(report["names"]), report["names"]
    assert set(report["names"]) <= expected | {"mlops-otel-drift-io"}, report["names"]
    assert report["left"] == []


def test_drift_monitor_takes_its_defaults_from_drift_settings() -> None:
    settings = DriftSettings(window_size=50, threshold=0.4, check_interval=None, max_features=3)
    monitor = DriftMonitor.from_settings(MemoryStore(), settings)
    try:
        assert {k: getattr(monitor, k) for k in settings.monitor_options()} == settings.monitor_options()
        assert monitor.get_detector("gnn", "v1").window_size == 50
    finally:
        monitor.close()
    plain = DriftMonitor(MemoryStore(), check_interval=None)
    defaults = {**DriftSettings().monitor_options(), "check_interval": None}
    assert {k: getattr(plain, k) for k in defaults} == defaults
    plain.close()


class _Owner:
    def __init__(self) -> None:
        self.runs = 0

    def tick(self) -> None:
        self.runs += 1


def _until(predicate: Callable[[], bool], limit: float = 10.0) -> bool:
    end = time.monotonic() + limit
    while not predicate() and time.monotonic() < end:
        time.sleep(0.01)
    return predicate()


def test_an_on_demand_worker_runs_when_woken_and_retires_when_idle() -> None:
    owner = _Owner()
    worker = PeriodicWorker(owner, _Owner.tick, name="mlops-otel-test", interval=0.05, on_demand=True)
    assert not worker.running  # no thread until there is work
    worker.wake()
    assert _until(lambda: owner.runs == 1)
    assert _until(lambda: not worker.running)  # idle for an interval: the thread exits
    assert owner.runs == 1  # an on-demand task never runs on the timer
    worker.wake()  # and the next wake-up starts a new one
    assert _until(lambda: owner.runs == 2)
    worker.stop()
    worker.wake()
    assert not worker.running


def test_a_worker_whose_owner_is_collected_exits_before_its_interval_ends() -> None:
    owner = _Owner()
    worker = PeriodicWorker(owner, _Owner.tick, name="mlops-otel-test", interval=3600, run_first=True)
    worker.start()
    end = time.monotonic() + 10
    while owner.runs == 0 and time.monotonic() < end:
        time.sleep(0.01)
    assert owner.runs == 1
    thread = worker.thread
    assert isinstance(thread, WorkerThread)
    del owner
    gc.collect()
    thread.join(30)  # without the wake-up on collection it would sleep for the hour
    assert not thread.is_alive()


def test_fault_hook_counts_on_the_owners_telemetry_without_keeping_it_alive() -> None:
    tel = Telemetry()

    class Holder:
        telemetry = tel

    holder = Holder()
    hook = fault_hook(holder, lambda h: h.telemetry, "test.reason")
    hook("mlops-otel-test", RuntimeError("boom"))
    assert (sample_value(tel, "mlops_telemetry_errors_total", reason="test.reason") or 0) >= 1
    ref = weakref.ref(holder)
    del holder
    gc.collect()
    assert ref() is None
    hook("mlops-otel-test", RuntimeError("after"))  # owner gone: nothing to count, never raises


class _Clock:
    """Records the monotonic time of each run."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def tick(self) -> None:
        self.at.append(time.monotonic())


def test_workers_whose_intervals_divide_each_other_run_on_the_same_beats() -> None:
    """#16: one schedule per process, so periodic work comes in one burst instead of several apart.

    Two workers started 37 ms apart, every 0.2 s and every 0.4 s: each run of the slower one falls on a
    run of the faster one, their slots apart (within the scheduling noise of a thread wake-up, far below
    the 37 ms the starts were apart, which they kept before the shared schedule), on this process's beats.
    """
    fast, slow = _Clock(), _Clock()
    a = PeriodicWorker(fast, _Clock.tick, name="mlops-otel-test-fast", interval=0.2)
    b = PeriodicWorker(slow, _Clock.tick, name="mlops-otel-test-slow", interval=0.4)
    a.start()
    time.sleep(0.037)
    b.start()
    assert _until(lambda: len(slow.at) >= 4)
    a.stop()
    b.stop()
    apart = slot_offset("mlops-otel-test-slow") - slot_offset("mlops-otel-test-fast")
    gaps = [min(abs(t - f - apart) for f in fast.at) for t in slow.at]
    assert max(gaps) < 0.015, gaps
    for t in slow.at:  # on the beats: the nearest beat (shifted by the slot) is within the noise
        offset = slot_offset("mlops-otel-test-slow")
        left = until_beat(0.4, t - 0.4 / 2, offset=offset) - 0.4 / 2
        assert abs(left) < 0.015, left


def test_the_sdks_beat_scheduled_workers_run_in_distinct_slots() -> None:
    """The workers on the same beats (deferred 0.5 s, drift check and A/B sync 1 s, fleet 2 s) run one
    after another, not all at the beat's instant (they would queue for the GIL together)."""
    names = ["mlops-otel-deferred", "mlops-otel-drift-check", "mlops-otel-ab", "mlops-otel-fleet"]
    slots = [slot_offset(n) for n in names]
    assert len(set(slots)) == len(names), dict(zip(names, slots, strict=True))
    assert all(0.0 <= s <= 0.021 + 1e-9 for s in slots)


def test_until_beat_never_schedules_a_run_sooner_than_a_quarter_interval() -> None:
    for i in range(1000):
        now = 1000.0 + i * 0.0137
        delay = until_beat(0.5, now, pid=1234, offset=0.006)
        assert 0.125 <= delay <= 0.625 + 1e-9
        assert until_beat(0.5, now + delay, pid=1234, offset=0.006) == pytest.approx(0.5, abs=1e-6)  # a beat

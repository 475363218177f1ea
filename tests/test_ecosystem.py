"""Package version, the zero-code configurator warning, and the one background-worker helper."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from importlib.metadata import EntryPoint, version
from pathlib import Path

import pytest

import mlops_otel
from mlops_otel._worker import PeriodicWorker
from mlops_otel.autoinstrument import missing_configurator_warning
from mlops_otel.telemetry import Telemetry
from mlops_otel.validation import InvalidValueError

SCRIPT = Path(sys.executable).parent / "mlops-otel"


def test_version_comes_from_the_package_metadata() -> None:
    assert mlops_otel.__version__ == version("mlops-otel")
    tel = Telemetry()
    tel.record_error("E", "s")
    (scope_metrics,) = tel.metrics_data().resource_metrics[0].scope_metrics
    assert (scope_metrics.scope.name, scope_metrics.scope.version) == ("mlops_otel", mlops_otel.__version__)


def test_cli_prints_its_version() -> None:
    out = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, f"mlops-otel {mlops_otel.__version__}\n")


def test_a_missing_configurator_is_warned_about() -> None:
    distro = EntryPoint("distro", "opentelemetry.distro:OpenTelemetryConfigurator", "opentelemetry_configurator")
    assert missing_configurator_warning([distro], {"OTEL_TRACES_EXPORTER": "console"}) is None
    warning = missing_configurator_warning([], {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"})
    assert warning is not None
    assert "OTEL_TRACES_EXPORTER=console has no effect" in warning
    assert "pip install 'mlops-otel[zerocode]'" in warning


def test_the_dev_install_has_a_configurator() -> None:
    """The zerocode extra's configurator is what makes OTEL_TRACES_EXPORTER work under opentelemetry-instrument."""
    from importlib.metadata import entry_points

    assert [ep.name for ep in entry_points(group="opentelemetry_configurator")]


# ------------------------------------------------------------------ PeriodicWorker
class Owner:
    def __init__(self) -> None:
        self.runs = 0
        self.ran = threading.Event()

    def tick(self) -> None:
        self.runs += 1
        self.ran.set()


def test_worker_runs_periodically_and_on_wake_and_stops() -> None:
    owner = Owner()
    worker = PeriodicWorker(owner, Owner.tick, name="test-worker", interval=3600)
    worker.start()
    worker.start()  # idempotent
    assert worker.running
    worker.wake()
    assert owner.ran.wait(10)
    worker.stop(timeout=10)
    assert not worker.running
    assert worker.stopped
    worker.start()  # a stopped worker stays stopped
    assert not worker.running
    assert owner.runs == 1


def test_a_failing_task_is_reported_and_the_worker_keeps_running() -> None:
    errors: list[tuple[str, BaseException]] = []
    calls: list[int] = []
    done = threading.Event()

    def task(_: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        done.set()

    owner = Owner()
    worker = PeriodicWorker(owner, task, name="failing", interval=0.01, on_error=lambda n, e: errors.append((n, e)))
    worker.start()
    assert done.wait(10)
    worker.stop(timeout=10)
    assert [(n, str(e)) for n, e in errors] == [("failing", "boom")]


def test_the_worker_does_not_keep_its_owner_alive() -> None:
    owner = Owner()
    worker = PeriodicWorker(owner, Owner.tick, name="weak", interval=0.01)
    worker.start()
    assert owner.ran.wait(10)
    del owner
    gc.collect()
    deadline = time.monotonic() + 10
    while worker.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.running  # the thread exited once its owner was collected


def test_worker_interval_is_validated() -> None:
    with pytest.raises(InvalidValueError, match="interval must be a positive finite number of seconds, got 0"):
        PeriodicWorker(Owner(), Owner.tick, name="x", interval=0)

"""``mlops-otel``: in process on a real Redis store, through a real uvicorn service, and as a console script."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_otel import Runtime
from mlops_otel.cli import main
from mlops_otel.cli._main import build_parser
from mlops_otel.cli._output import color_wanted

from .services import RedisServer, free_port, uvicorn_process

TOKEN = "s3cret"
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "mlops-otel"
ENV_VARS = ("MLOPS_OTEL_STORE_URL", "MLOPS_OTEL_STORE_PREFIX", "MLOPS_OTEL_API_URL", "MLOPS_OTEL_MANAGEMENT_TOKEN",
            "NO_COLOR")
ANSI = re.compile(r"\033\[[0-9;]*m")

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


class Cli:
    """Runs ``main`` in process with fixed backend options and captures its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str], backend: list[str]) -> None:
        self.capsys = capsys
        self.backend = backend

    def __call__(self, *argv: str, backend: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*(self.backend if backend else []), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, err
        assert err == ""
        return out

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok("--json", *argv))


@pytest.fixture
def prefix() -> str:
    return "cli-" + uuid.uuid4().hex[:8]


@pytest.fixture
def store_cli(capsys: pytest.CaptureFixture[str], redis_service: RedisServer, prefix: str) -> Cli:
    return Cli(capsys, ["--store", redis_service.url, "--store-prefix", prefix])


def record(url: str, prefix: str, test: str, *, control: float, treatment: float, n: int = 200) -> None:
    """Record *n* results per variant from this process, as a service worker would (flushed on close)."""
    runtime = Runtime.create(store=url, store_prefix=prefix, fleet_metrics=False)
    rng = np.random.default_rng(11)
    try:
        for variant, mean in (("control", control), ("treatment", treatment)):
            for conf, latency in zip(rng.normal(mean, 0.05, n).clip(0, 1), rng.normal(20, 2, n), strict=True):
                runtime.ab.record_result(test, variant, float(latency), float(conf), False)
    finally:
        runtime.close()


def table(out: str) -> list[list[str]]:
    """A printed table as rows of cells, cut at the header's column offsets (so misalignment shows)."""
    header, *lines = out.rstrip("\n").splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    rows = [[m.group() for m in re.finditer(r"\S+(?: \S+)*", header)]]
    for line in lines:
        cells = []
        for i, start in enumerate(starts):
            assert start == 0 or line[start - 1] == " ", f"column {i} is not aligned in {line!r}"
            end = starts[i + 1] if i + 1 < len(starts) else len(line)
            cells.append(line[start:end].strip())
        rows.append(cells)
    return rows


# -------------------------------------------------------------- store backend
def test_registry_commands_on_a_redis_store(store_cli: Cli) -> None:
    assert store_cli.ok("registry", "list") == "no model types registered\n"
    assert store_cli.ok("registry", "register", "gnn", "v2.1.0", "--metadata", '{"run": 41}') == \
        "registered gnn v2.1.0 as champion\n"
    assert store_cli.ok("registry", "register", "gnn", "v2.2.0") == "registered gnn v2.2.0 as candidate\n"
    assert table(store_cli.ok("registry", "list")) == [
        ["MODEL TYPE", "CHAMPION", "CHALLENGER", "VERSIONS"], ["gnn", "v2.1.0", "-", "2"]]
    rows = table(store_cli.ok("registry", "list", "gnn"))
    assert rows[0] == ["VERSION", "ROLE", "RESULTS", "ERROR RATE", "LATENCY MS", "CONFIDENCE", "REGISTERED (UTC)"]
    assert [r[:6] for r in rows[1:]] == [["v2.1.0", "champion", "0", "-", "-", "-"],
                                         ["v2.2.0", "candidate", "0", "-", "-", "-"]]

    assert store_cli.ok("registry", "promote", "gnn", "v2.2.0", "--reason", "offline eval") == \
        "gnn champion is now v2.2.0\n"
    assert store_cli.ok("registry", "promote", "gnn", "v2.2.0", "--reason", "again") == \
        "v2.2.0 already is the champion of gnn; nothing changed\n"
    assert store_cli.ok("registry", "rollback", "gnn", "--reason", "latency") == \
        "rolled back gnn: champion is now v2.1.0\n"
    history = table(store_cli.ok("registry", "history", "gnn"))
    assert history[0] == ["TIME (UTC)", "ACTION", "VERSION", "PREVIOUS CHAMPION", "REASON"]
    assert [r[1:] for r in history[1:]] == [
        ["register", "v2.1.0", "-", "registered"], ["promote", "v2.1.0", "-", "first version registered"],
        ["register", "v2.2.0", "v2.1.0", "registered"], ["promote", "v2.2.0", "v2.1.0", "offline eval"],
        ["rollback", "v2.1.0", "v2.2.0", "latency"]]

    versions = store_cli.json("registry", "list", "gnn")
    assert [(v["version"], v["role"], v["metadata"]) for v in versions] == [
        ("v2.1.0", "champion", {"run": 41}), ("v2.2.0", "candidate", {})]
    assert store_cli.json("registry", "list") == [
        {"model_type": "gnn", "champion": "v2.1.0", "challenger": None, "versions": 2}]
    assert [h["action"] for h in store_cli.json("registry", "history", "gnn")] == [
        "register", "promote", "register", "promote", "rollback"]


def test_ab_commands_on_a_redis_store(store_cli: Cli, redis_service: RedisServer, prefix: str) -> None:
    store_cli.ok("registry", "register", "gnn", "v2.1.0")
    store_cli.ok("registry", "register", "gnn", "v2.2.0")
    started = store_cli.ok("ab", "start", "--name", "gnn_v2.2_test", "--model-type", "gnn", "--control", "v2.1.0",
                           "--treatment", "v2.2.0", "--traffic-pct", "50", "--min-samples", "50",
                           "--max-error-rate-increase", "0.05")  # a margin 200 results per arm can show
    assert started.splitlines()[0] == "✅ A/B test started: gnn_v2.2_test"
    assert "treatment   v2.2.0 (50% of users)" in started
    listed = table(store_cli.ok("ab", "list"))
    assert listed[0] == ["NAME", "MODEL TYPE", "CONTROL", "TREATMENT", "TRAFFIC", "STATE", "STARTED (UTC)",
                         "ENDS (UTC)"]
    assert listed[1][:6] == ["gnn_v2.2_test", "gnn", "v2.1.0", "v2.2.0", "50%", "active"]

    waiting = store_cli.ok("ab", "evaluate", "gnn_v2.2_test", "--finalize")
    assert "Decision        continue" in waiting
    assert waiting.rstrip().endswith("not finalized: the decision is continue")

    record(redis_service.url, prefix, "gnn_v2.2_test", control=0.5, treatment=0.9)
    evaluation = store_cli.json("ab", "evaluate", "gnn_v2.2_test")
    assert evaluation["decision"] == "promote"
    assert (evaluation["n_control"], evaluation["n_treatment"]) == (200, 200)
    out = store_cli.ok("ab", "evaluate", "gnn_v2.2_test", "--finalize")
    fields = dict(line.split(None, 1) for line in out.splitlines()[:2])
    assert fields == {"Test": "gnn_v2.2_test", "Decision": "promote"}
    effects = table(out.split("\n\n")[1])
    assert effects[0] == ["METRIC", "CONTROL", "TREATMENT", "EFFECT", "ANYTIME-VALID INTERVAL", "VERDICT"]
    assert [(r[0], r[-1]) for r in effects[1:]] == [("error_rate", "inconclusive"), ("latency_ms", "inconclusive"),
                                                     ("confidence", "better")]
    assert out.rstrip().endswith("✅ Treatment promoted to champion: v2.2.0 now serves gnn")
    assert store_cli.json("registry", "list")[0]["champion"] == "v2.2.0"
    assert store_cli.json("ab", "list")[0]["state"] == "promoted"

    code, _, err = store_cli("ab", "finalize", "gnn_v2.2_test", "rollback")
    assert code == 1
    assert err.startswith("mlops-otel: error: A/B test 'gnn_v2.2_test' is already promoted")


def test_ab_finalize_and_abort_on_a_redis_store(store_cli: Cli) -> None:
    store_cli.ok("registry", "register", "gnn", "v1")
    store_cli.ok("registry", "register", "gnn", "v2")
    base = ("--model-type", "gnn", "--control", "v1", "--treatment", "v2")
    test = store_cli.json("ab", "start", "--name", "t1", *base, "--max-latency-increase-pct", "5", "--auto-finalize")
    assert test["config"]["guardrails"]["max_latency_increase_pct"] == 5.0
    assert test["config"]["auto_finalize"] is True
    code, _, err = store_cli("ab", "start", "--name", "t2", *base)
    assert (code, err) == (1, "mlops-otel: error: model type 'gnn' already has an active A/B test 't1'; "
                              "finalize or abort it first\n")
    assert store_cli.ok("ab", "finalize", "t1", "rollback", "--reason", "not worth it") == \
        "↩️ Treatment rolled back: v1 stays champion of gnn\n"
    result = store_cli.json("ab", "list")
    assert (result[0]["state"], result[0]["reason"]) == ("rolled_back", "not worth it")
    store_cli.ok("ab", "start", "--name", "t2", *base)
    assert store_cli.ok("ab", "abort", "t2") == "A/B test t2 aborted; gnn champion unchanged\n"
    aborted = store_cli.json("ab", "list")[1]
    assert aborted["state"] == "aborted"


def test_domain_failures_exit_1_with_one_line(store_cli: Cli) -> None:
    cases = [
        (("ab", "evaluate", "nope"), "no A/B test named 'nope'"),
        (("ab", "finalize", "nope", "promote"), "no A/B test named 'nope'"),
        (("ab", "abort", "nope"), "no A/B test named 'nope'"),
        (("registry", "list", "bert"), "model type 'bert' has no registered versions"),
        (("registry", "history", "bert"), "model type 'bert' has no registered versions"),
        (("registry", "promote", "bert", "v1", "--reason", "r"),
         "version 'v1' of model type 'bert' is not registered (registered: none)"),
        (("ab", "start", "--name", "t", "--model-type", "gnn", "--control", "a", "--treatment", "b",
          "--traffic-pct", "120"), "treatment_traffic_pct must be a finite number in (0, 100), got 120.0"),
    ]
    for argv, message in cases:
        code, out, err = store_cli(*argv)
        assert (code, out, err) == (1, "", f"mlops-otel: error: {message}\n"), argv


def test_usage_errors_exit_2(store_cli: Cli, redis_service: RedisServer) -> None:
    for argv in (("registry", "promote", "gnn", "v1"),  # --reason is required
                 ("ab", "finalize", "t", "ship"),
                 ("registry", "register", "gnn", "v1", "--metadata", "[1]"),
                 ("ab",),
                 ("--api", "http://127.0.0.1:1/mlops", "registry", "list")):
        code, _, err = store_cli(*argv)
        assert code == 2, argv
        assert "usage: mlops-otel" in err
    code, _, err = store_cli("registry", "list", backend=False)
    assert code == 2
    assert "no backend: pass --store URL or --api URL" in err
    code, _, err = store_cli("--store", "postgres://x", "registry", "list", backend=False)
    assert (code, err) == (2, "mlops-otel: error: cannot open store: url must be a URL starting with memory://, "
                              "redis://, rediss://, unix:// or redis+cluster://, got 'postgres://x'\n")
    code, out, _ = store_cli("--help", backend=False)
    assert code == 0
    assert "exit codes:" in out


def test_unreachable_store_exits_4_without_a_traceback(store_cli: Cli) -> None:
    url = f"redis://user:pw@127.0.0.1:{free_port()}/0"
    code, out, err = store_cli("--store", url, "registry", "list", backend=False)
    assert (code, out) == (4, "")
    assert err.startswith("mlops-otel: error: cannot use the state store at redis://user:***@127.0.0.1:")
    assert "pw" not in err
    assert "Traceback" not in err


def test_environment_and_options_after_the_command(capsys: pytest.CaptureFixture[str], redis_service: RedisServer,
                                                   prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_OTEL_STORE_URL", redis_service.url)
    monkeypatch.setenv("MLOPS_OTEL_STORE_PREFIX", prefix)
    cli = Cli(capsys, [])
    cli.ok("registry", "register", "gnn", "v1")
    assert json.loads(cli.ok("registry", "list", "--json")) == json.loads(cli.ok("--json", "registry", "list"))
    assert cli.json("registry", "list")[0]["champion"] == "v1"


def feed_drift(url: str, prefix: str) -> None:
    """Three detectors written by another process: no drift, a 0.3 shift, too few samples."""
    runtime = Runtime.create(store=url, store_prefix=prefix, fleet_metrics=False)
    rng = np.random.default_rng(3)
    try:
        for version, shift, n in (("v2.1.0", 0.0, 1000), ("v2.2.0", 0.3, 1000), ("v2.3.0", 0.0, 120)):
            detector = runtime.drift.get_detector("gnn", version)
            detector.set_reference(anomaly_scores=rng.beta(6, 14, 1000), confidences=rng.beta(18, 2, 1000))
            detector.add_production_samples(np.clip(rng.beta(6, 14, n) + shift, 0, 1), rng.beta(18, 2, n))
    finally:
        runtime.close()


def test_drift_check_on_a_redis_store(store_cli: Cli, redis_service: RedisServer, prefix: str) -> None:
    assert store_cli.ok("drift", "check") == "no drift detectors\n"
    feed_drift(redis_service.url, prefix)
    lines = store_cli.ok("drift", "check").splitlines()
    assert re.fullmatch(r"🟢 gnn:v2\.1\.0  0\.0\d\d  ok", lines[0]), lines[0]
    assert re.fullmatch(r"🔴 gnn:v2\.2\.0  0\.\d{3}  alert", lines[1]), lines[1]
    assert lines[2].startswith("   ⚠️  Output distribution shifted: anomaly_score (KS ")
    assert lines[3] == "⚪ gnn:v2.3.0      -  collecting data (120 of 500 samples)"
    assert len(lines) == 4
    coloured = store_cli.ok("--color", "always", "drift", "check")
    assert "\033[32m0.0" in coloured
    assert "\033[31m0." in coloured

    code, _, _ = store_cli("drift", "check", "--fail-on-alert")
    assert code == 3
    reports = store_cli.json("drift", "check")
    assert [(r["key"], r["level"], r["alert_triggered"]) for r in reports] == [
        ("gnn:v2.1.0", "ok", False), ("gnn:v2.2.0", "alert", True), ("gnn:v2.3.0", "insufficient_data", False)]
    assert {"current_drift_score", "alert_triggered", "recommendation", "ks_statistic", "psi",
            "confidence_degradation", "window_size", "time_span_seconds"} <= set(reports[0])


def test_colour_only_when_wanted(store_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    store_cli.ok("registry", "register", "gnn", "v1")
    plain = store_cli.ok("registry", "list", "gnn")
    assert not ANSI.search(plain)  # captured output is not a terminal
    coloured = store_cli.ok("--color", "always", "registry", "list", "gnn")
    assert "\033[32mchampion" in coloured
    assert ANSI.sub("", coloured) == plain  # colour never changes the alignment

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert color_wanted("auto", Tty(), {}) is True
    assert color_wanted("auto", Tty(), {"NO_COLOR": "1"}) is False
    assert color_wanted("auto", Tty(), {"NO_COLOR": ""}) is True
    assert color_wanted("auto", io.StringIO(), {}) is False
    assert color_wanted("never", Tty(), {}) is False
    assert color_wanted("always", io.StringIO(), {"NO_COLOR": "1"}) is True


# --------------------------------------------------------------- HTTP backend
class Service:
    def __init__(self, api: str, store: str, prefix: str) -> None:
        self.api = api
        self.store = store
        self.prefix = prefix


@pytest.fixture(scope="module")
def service(redis_service: RedisServer) -> Iterator[Service]:
    prefix = "cli-http-" + uuid.uuid4().hex[:8]
    env = {"MLOPS_OTEL_STORE_URL": redis_service.url, "MLOPS_OTEL_STORE_PREFIX": prefix,
           "MLOPS_OTEL_MANAGEMENT_TOKEN": TOKEN}
    with uvicorn_process("tests.apps.management_app:app", env=env) as (url, _proc):
        yield Service(url + "/mlops", redis_service.url, prefix)


@pytest.fixture
def api_cli(capsys: pytest.CaptureFixture[str], service: Service) -> Cli:
    return Cli(capsys, ["--api", service.api, "--token", TOKEN])


def test_ab_and_registry_through_the_management_api(api_cli: Cli, service: Service,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    store_cli = Cli(capsys, ["--store", service.store, "--store-prefix", service.prefix])
    assert api_cli.ok("registry", "register", "http_gnn", "v2.1.0") == "registered http_gnn v2.1.0 as champion\n"
    api_cli.ok("registry", "register", "http_gnn", "v2.2.0")
    started = api_cli.json("ab", "start", "--name", "http_test", "--model-type", "http_gnn", "--control", "v2.1.0",
                           "--treatment", "v2.2.0", "--traffic-pct", "50", "--min-samples", "50",
                           "--max-error-rate-increase", "0.05")  # a margin 200 results per arm can show
    assert started["state"] == "active"
    record(service.store, service.prefix, "http_test", control=0.5, treatment=0.9)
    out = api_cli.ok("ab", "evaluate", "http_test", "--finalize")
    assert "Decision        promote" in out
    assert out.rstrip().endswith("✅ Treatment promoted to champion: v2.2.0 now serves http_gnn")
    # Same store, same views: the API and the store backend print identical JSON.
    for argv in (("registry", "list", "http_gnn"), ("registry", "history", "http_gnn"), ("ab", "list")):
        assert api_cli.json(*argv) == store_cli.json(*argv), argv
    assert table(api_cli.ok("registry", "list", "http_gnn"))[1][:2] == ["v2.1.0", "candidate"]
    assert api_cli.ok("registry", "rollback", "http_gnn", "--reason", "pager") == \
        "rolled back http_gnn: champion is now v2.1.0\n"


def test_rollout_status_and_check_through_the_management_api(api_cli: Cli, service: Service,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """#14: the same rollout view through the service and straight from the store; check rolls harm back."""
    from mlops_otel.ab import ABTestConfig, RolloutManager, RolloutSchedule

    store_cli = Cli(capsys, ["--store", service.store, "--store-prefix", service.prefix])
    api_cli.ok("registry", "register", "http_ro", "v1")
    api_cli.ok("registry", "register", "http_ro", "v2")
    runtime = Runtime.create(store=service.store, store_prefix=service.prefix, fleet_metrics=False)
    try:
        RolloutManager(runtime.ab).start(ABTestConfig(name="http_ro_test", model_type="http_ro", control_version="v1",
                                                      treatment_version="v2", min_samples=50),
                                         RolloutSchedule.of((10.0, 50.0), min_results=200, min_seconds=3600.0))
        for i in range(1800):  # 10 % treatment with 40 % errors against 2 %
            runtime.ab.record_result("http_ro_test", "control", 20.0, 0.8, i % 50 == 0)
        for i in range(200):
            runtime.ab.record_result("http_ro_test", "treatment", 20.0, 0.8, i % 5 < 2)
    finally:
        runtime.close()  # flushes the results to the store
    via_api, via_store = (c.json("ab", "rollout", "status", "http_ro_test") for c in (api_cli, store_cli))
    for shown in (via_api, via_store):
        assert (shown["status"], shown["step"], shown["traffic_pct"]) == ("ramping", 0, 10.0)
        assert shown["verdict"]["decision"] == "rollback"  # judged, not acted on: status is a read
    assert via_api["history"] == via_store["history"]
    checked = api_cli.json("ab", "rollout", "check", "http_ro_test")
    assert (checked["changed"], checked["roles_moved"], checked["status"]) == ("rollback", True, "rolled_back")
    assert api_cli.json("ab", "rollout", "check", "http_ro_test")["changed"] is None  # once
    assert [h["decision"] for h in store_cli.json("ab", "rollout", "status", "http_ro_test")["history"]] == [
        "start", "rollback"]
    code, _, err = api_cli("ab", "rollout", "status", "http_ro_nope")
    assert (code, err) == (1, "mlops-otel: error: no A/B test named 'http_ro_nope'\n")


def test_drift_check_through_the_management_api(api_cli: Cli, service: Service) -> None:
    import httpx

    root = service.api.removesuffix("/mlops")
    for version, shift in (("v1", 0.0), ("v2", 0.3)):
        response = httpx.post(f"{root}/simulate/drift", params={"model_type": "http_drift", "version": version,
                                                                 "shift": shift}, timeout=30)
        assert response.status_code == 200, response.text
    lines = api_cli.ok("drift", "check").splitlines()
    assert [line.split()[:2] + line.split()[3:4] for line in lines if not line.startswith("   ")] == [
        ["🟢", "http_drift:v1", "ok"], ["🔴", "http_drift:v2", "alert"]]
    code, _, _ = api_cli("drift", "check", "--fail-on-alert")
    assert code == 3
    assert [r["level"] for r in api_cli.json("drift", "check")] == ["ok", "alert"]


def test_api_failures_map_to_exit_codes(api_cli: Cli, service: Service) -> None:
    api_cli.ok("registry", "register", "http_err", "v1")
    code, _, err = api_cli("ab", "finalize", "nope", "promote")
    assert (code, err) == (1, "mlops-otel: error: no A/B test named 'nope'\n")
    code, _, err = api_cli("registry", "register", "http_err", "v1")
    assert (code, err) == (1, "mlops-otel: error: version 'v1' of model type 'http_err' is already registered\n")
    code, _, err = api_cli("ab", "start", "--name", "x", "--model-type", "http_err", "--control", "v1",
                           "--treatment", "v1")
    assert (code, err) == (1, "mlops-otel: error: treatment_version must be different from control_version, "
                              "got 'v1'\n")

    no_token = ["--api", service.api]
    code, _, err = api_cli(*no_token, "registry", "promote", "http_err", "v1", "--reason", "r", backend=False)
    assert code == 4
    assert err == ("mlops-otel: error: missing or malformed Authorization header: send 'Authorization: Bearer "
                   "<token>' (HTTP 401; pass --token or set MLOPS_OTEL_MANAGEMENT_TOKEN)\n")
    code, _, err = api_cli(*no_token, "--token", "wrong", "ab", "abort", "x", backend=False)
    assert (code, err) == (4, "mlops-otel: error: the bearer token is not the management token (HTTP 403)\n")
    code, out, _ = api_cli(*no_token, "registry", "list", backend=False)  # reads need no token
    assert code == 0
    assert "http_err" in out

    root = service.api.removesuffix("/mlops")
    code, _, err = api_cli("--api", root, "registry", "list", backend=False)
    assert code == 4
    assert "is --api the management API's base URL (e.g. http://127.0.0.1:8000/mlops)?" in err
    code, _, err = api_cli("--api", f"http://127.0.0.1:{free_port()}/mlops", "ab", "list", backend=False)
    assert code == 4
    assert err.startswith("mlops-otel: error: cannot reach the management API at http://127.0.0.1:")
    assert "Traceback" not in err


def test_api_url_and_token_from_the_environment(capsys: pytest.CaptureFixture[str], service: Service,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_OTEL_API_URL", service.api)
    monkeypatch.setenv("MLOPS_OTEL_MANAGEMENT_TOKEN", TOKEN)
    monkeypatch.setenv("MLOPS_OTEL_STORE_URL", "redis://127.0.0.1:1/0")  # --api wins over a store in the env
    cli = Cli(capsys, [])
    assert cli.ok("registry", "register", "http_env", "v1") == "registered http_env v1 as champion\n"


# ------------------------------------------------------------- console script
def run_script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, timeout=60,
                          env={**clean, **(env or {})}, check=False)


def test_console_script(redis_service: RedisServer, prefix: str) -> None:
    assert SCRIPT.exists(), f"{SCRIPT} is missing: pip install -e ."
    helped = run_script("--help")
    assert helped.returncode == 0
    assert "{ab,drift,registry}" in helped.stdout or all(g in helped.stdout for g in ("ab", "drift", "registry"))
    failed = run_script("--store", redis_service.url, "--store-prefix", prefix, "ab", "finalize", "nope", "promote")
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == "mlops-otel: error: no A/B test named 'nope'\n"
    down = run_script("registry", "list", env={"MLOPS_OTEL_STORE_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert down.returncode == 4
    assert "Traceback" not in down.stderr


# ----------------------------------------------------------------------- docs
def test_every_documented_command_parses() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M)
    commands = [line[2:] for block in blocks for line in block.splitlines() if line.startswith("$ mlops-otel")]
    assert len(commands) >= 12
    parser = build_parser()
    seen = set()
    for command in commands:
        argv = shlex.split(command)[1:]
        args = parser.parse_args(argv)
        seen.add((args.group, args.command))
    assert seen == {("ab", c) for c in ("start", "list", "evaluate", "finalize", "abort", "rollout")} | {
        ("drift", "check")} | {("registry", c) for c in ("list", "register", "promote", "rollback", "history")}

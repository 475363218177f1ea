"""``make demo``: the example diagnosis service, an A/B test to a decision, and a drift alert.

Starts the example service in process (uvicorn, in-memory store), then over HTTP:

1. sends baseline traffic to the champion GNN v2.1.0;
2. starts the A/B test ``gnn_v2.2_test`` (v2.1.0 against v2.2.0) through the management
   API and evaluates it after every batch until the sequential test decides, then
   finalizes the decision (the registry's champion moves);
3. injects sensor drift and shows the drift detector's alert and recommendation;
4. prints a summary: the decision, the drift score and where the metrics are.

``python -m examples.demo --quick`` runs a smaller version (used by the tests);
``--serve`` (``make demo KEEP=1``) leaves the service running afterwards so the
operator's page (``/mlops/ui``) can be opened in a browser; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlops_otel import Runtime, Settings

from .diagnosis_service.app import MODEL_TYPE, create_app

TOKEN = "demo-token"
TEST_NAME = "gnn_v2.2_test"
TERMINAL = {"promote", "rollback", "halt"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(port: int) -> Iterator[str]:
    """Run the example service (memory store) on 127.0.0.1:*port* in a background thread."""
    app = create_app(runtime_factory=lambda: Runtime.create(Settings(store="memory://")), management_token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the example service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class Traffic:
    """Simulated users asking for diagnoses, a few requests at a time."""

    def __init__(self, client: httpx.Client, equipment: list[str], *, seed: int = 7, users: int = 5_000) -> None:
        self.client = client
        self.equipment = equipment
        self.random = random.Random(seed)
        self.users = [f"user-{i:05d}" for i in range(users)]
        self.sent = 0
        self.failed = 0

    def _one(self, payload: dict[str, str]) -> int:
        return self.client.post("/diagnosis/create", json=payload).status_code

    def send(self, count: int, progress: Progress, task: TaskID) -> None:
        payloads = [{"equipment_id": self.random.choice(self.equipment), "user_id": self.random.choice(self.users)}
                    for _ in range(count)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            for status in pool.map(self._one, payloads):
                self.sent += 1
                self.failed += status >= 500
                progress.advance(task)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                           f"{response.text}")
    return response.json()


def run(*, quick: bool = False, console: Console | None = None, keep_serving: bool = False) -> dict[str, Any]:
    """Run the demo; return its summary (also printed)."""
    console = console or Console()
    batch = 300 if quick else 500
    baseline = 300 if quick else 1_000
    max_batches = 12 if quick else 30
    drift_requests = 1_200 if quick else 1_500
    auth = {"Authorization": f"Bearer {TOKEN}"}
    summary: dict[str, Any] = {}
    started = time.perf_counter()
    with serve(_free_port()) as url, httpx.Client(base_url=url, timeout=30, headers=auth) as client:
        console.rule("[bold]mlops-otel demo: equipment diagnosis service")
        console.print(f"service at {url}  (metrics: {url}/metrics, API docs: {url}/docs)")
        console.print(f"operator page: {url}/mlops/ui", soft_wrap=True)
        traffic = Traffic(client, _check(client.get("/equipment")))
        with _progress(console) as progress:
            traffic.send(baseline, progress, progress.add_task("baseline traffic (champion v2.1.0)", total=baseline))

        config = {"name": TEST_NAME, "model_type": MODEL_TYPE, "control_version": "v2.1.0",
                  "treatment_version": "v2.2.0", "treatment_traffic_pct": 20, "duration_days": 7,
                  "min_samples": 500,
                  # Wall-clock latencies of a demo on a shared machine are noisy: a 50 % latency margin
                  # lets the quick run show non-inferiority (a production test would keep 10 %). About 2 %
                  # of the demo's requests fail in both arms; showing the default 0.5-point error margin
                  # would take ~40,000 results per arm, so the demo tolerates 2 points.
                  "guardrails": {"max_latency_increase_pct": 50, "max_error_rate_increase": 0.02}}
        _check(client.post("/mlops/ab/tests", json=config))
        console.print(f"started A/B test [bold]{TEST_NAME}[/]: v2.1.0 (control) vs v2.2.0 (treatment, 20%)")
        evaluation: dict[str, Any] = {}
        with _progress(console) as progress:
            task = progress.add_task("A/B test traffic", total=batch * max_batches)
            for i in range(max_batches):
                traffic.send(batch, progress, task)
                evaluation = _check(client.post(f"/mlops/ab/tests/{TEST_NAME}/evaluate"))
                progress.console.print(
                    f"  evaluation {i + 1}: decision={evaluation['decision']:<9} "
                    f"n_control={evaluation['n_control']:<5} n_treatment={evaluation['n_treatment']}"
                )
                if evaluation["decision"] in TERMINAL:
                    progress.update(task, total=batch * (i + 1))
                    break
        decision = evaluation.get("decision", "continue")
        console.print(f"decision: [bold]{decision}[/] - {evaluation.get('recommendation', '')}")
        if decision in ("promote", "rollback"):
            _check(client.post(f"/mlops/ab/tests/{TEST_NAME}/finalize",
                               json={"action": decision, "reason": evaluation["recommendation"]}))
        champion = _check(client.get(f"/mlops/registry/{MODEL_TYPE}/versions"))
        champion_version = next((v["version"] for v in champion if v.get("role") == "champion"), "v2.1.0")
        console.print(f"champion of {MODEL_TYPE!r} is now [bold]{champion_version}[/]")

        _check(client.post("/simulation/drift", json={"level": 1.5}))
        console.print("injected sensor drift (level 1.5): the input pipeline changed")
        with _progress(console) as progress:
            task = progress.add_task("traffic with drifted sensors", total=drift_requests)
            for _ in range(4):  # a report after each quarter: the operator page's score over time
                traffic.send(drift_requests // 4, progress, task)
                _check(client.get(f"/mlops/drift/{MODEL_TYPE}/{champion_version}"))
        report = _check(client.get(f"/mlops/drift/{MODEL_TYPE}/{champion_version}"))
        colour = "red" if report["alert_triggered"] else "green"
        console.print(f"[{colour}]drift score {report['current_drift_score']:.3f}, "
                      f"alert={report['alert_triggered']}[/]")
        console.print(f"recommendation: {report['recommendation']}")
        metrics = client.get("/metrics").text
        families = sorted({line.split("{")[0].split(" ")[0] for line in metrics.splitlines()
                           if line and not line.startswith("#")})

        summary = {
            "requests": traffic.sent, "failed_requests": traffic.failed, "ab_decision": decision,
            "n_control": evaluation.get("n_control"), "n_treatment": evaluation.get("n_treatment"),
            "champion": champion_version, "drift_score": round(report["current_drift_score"], 3),
            "drift_alert": report["alert_triggered"], "metrics_url": f"{url}/metrics",
            "seconds": round(time.perf_counter() - started, 1), "exported_series_families": len(families),
        }
        if keep_serving:
            _keep_serving(console, summary, url)
    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print("The service has stopped; run it yourself with "
                  "[bold]uvicorn examples.diagnosis_service.app:app[/] and scrape /metrics "
                  "(examples/deploy/ has the Prometheus, Grafana and Collector files).")
    return summary


def _keep_serving(console: Console, summary: dict[str, Any], url: str) -> None:
    """Print the summary and the operator page's address, then serve until Ctrl-C (``--serve``)."""
    table = Table(title="summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    console.print(table)
    console.print(f"The service keeps running: open {url}/mlops/ui (Ctrl-C stops it).", soft_wrap=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (about a third of the traffic)")
    parser.add_argument("--serve", action="store_true", help="keep the service running afterwards (Ctrl-C stops it)")
    args = parser.parse_args(argv)
    summary = run(quick=args.quick, keep_serving=args.serve)
    ok = summary["ab_decision"] in TERMINAL and summary["drift_alert"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Real services for the integration tests, started on free loopback ports.

In CI (``CI=true``) a missing binary is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "OtelCollector",
    "OtlpTraceSink",
    "PrometheusServer",
    "collector_binary",
    "otel_collector",
    "otlp_trace_sink",
    "free_port",
    "prometheus_server",
    "redis_cluster",
    "redis_server",
    "require_binary",
    "wait_for_port",
]


def require_binary(name: str) -> str:
    """Return the path of *name*; skip locally, fail in CI when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian package; `make test` installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RedisServer:
    """One ``redis-server`` process on a loopback port; can be killed and restarted."""

    def __init__(self, port: int, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.port = port
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = require_binary("redis-server")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown save, clients see connection errors)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open and every reply stalls (a hung host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def debug_sleep(self, seconds: float) -> threading.Thread:
        """Start ``DEBUG SLEEP <seconds>`` (the server blocks every client) on a thread; join it to wait."""
        import redis

        def run() -> None:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=seconds + 30)
            try:
                client.execute_command("DEBUG", "SLEEP", str(seconds))
            finally:
                client.close()

        thread = threading.Thread(target=run, name="redis-debug-sleep", daemon=True)
        thread.start()
        return thread


@contextlib.contextmanager
def redis_server(extra: tuple[str, ...] = ()) -> Iterator[RedisServer]:
    """A fresh standalone ``redis-server`` (with *extra* arguments) for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="mlops-redis-") as tmp:
        server = RedisServer(free_port(), Path(tmp), extra)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def redis_cluster(nodes: int = 3, extra: tuple[str, ...] = ()) -> Iterator[list[RedisServer]]:
    """A local Redis Cluster of *nodes* masters, no replicas (*extra*: more redis-server arguments)."""
    cli = require_binary("redis-cli")
    with tempfile.TemporaryDirectory(prefix="mlops-cluster-") as tmp:
        servers: list[RedisServer] = []
        try:
            for i in range(nodes):
                workdir = Path(tmp) / str(i)
                workdir.mkdir()
                port = free_port()
                # The bus port defaults to port + 10000, which may be taken or exceed 65535.
                server = RedisServer(port, workdir, (
                    "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
                    "--cluster-node-timeout", "2000", "--cluster-port", str(free_port()), *extra,
                ))
                server.start()
                servers.append(server)
            addresses = [f"127.0.0.1:{s.port}" for s in servers]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
            )
            deadline = time.monotonic() + 30
            while True:
                info = subprocess.run(
                    [cli, "-p", str(servers[0].port), "cluster", "info"],
                    check=True, capture_output=True, text=True, timeout=10,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster did not become ok: {info}")
                time.sleep(0.1)
            yield servers
        finally:
            for server in servers:
                server.stop()


@contextlib.contextmanager
def uvicorn_process(
    target: str, *, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (), workers: int = 1,
    cwd: str | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``uvicorn <target>`` (optionally under *prefix*, e.g. opentelemetry-instrument) on a free port.

    Yields the base URL and the process; stdout/stderr are captured to a temporary file
    readable via ``proc.output_path`` (attribute set on the Popen object).
    """
    import sys

    port = free_port()
    root = str(Path(__file__).resolve().parent.parent)
    full_env = {**os.environ, "PYTHONPATH": root, **(env or {})}
    bindir = str(Path(sys.executable).parent)
    full_env["PATH"] = bindir + os.pathsep + full_env.get("PATH", "")
    cmd = [*prefix, sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--log-level", "warning"]
    with tempfile.NamedTemporaryFile(prefix="mlops-uvicorn-", suffix=".log", delete=False) as log:
        output_path = log.name
    with open(output_path, "wb") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or root)
    proc.output_path = output_path  # type: ignore[attr-defined]  # tests read the log after stopping
    try:
        wait_for_port(port, timeout=60, proc=proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        _stop(proc)


class PrometheusServer:
    """A running ``prometheus`` on a loopback port, with a small HTTP API client."""

    def __init__(self, port: int, workdir: Path, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc = proc
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (raises on an API error)."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus /api/v1/{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate the instant PromQL *expr*; return its vector (``[{"metric": ..., "value": ...}]``)."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def log(self) -> str:
        """The server's output so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def prometheus_server(
    config_text: str, *, files: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> Iterator[PrometheusServer]:
    """A ``prometheus`` server with *config_text* as its ``prometheus.yml``, on a free loopback port.

    *files* (name -> text) are written next to the config, e.g. the rule files it
    names. Yields once the server reports ready; stops it afterwards.
    """
    binary = require_binary("prometheus")
    with tempfile.TemporaryDirectory(prefix="mlops-prometheus-") as tmp:
        workdir = Path(tmp)
        for name, text in {**(files or {}), "prometheus.yml": config_text}.items():
            (workdir / name).write_text(text, encoding="utf-8")
        port = free_port()
        log_path = workdir / "prometheus.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn",
                 *extra_args],
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
            )
        server = PrometheusServer(port, workdir, proc, log_path)
        try:
            wait_for_port(port, timeout=30, proc=proc)
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prometheus did not become ready:\n{server.log()}")
                time.sleep(0.1)
            yield server
        finally:
            _stop(proc)


# ------------------------------------------------------------------ OpenTelemetry Collector
_ROOT = Path(__file__).resolve().parent.parent


def collector_binary() -> str:
    """The test Collector built by ``scripts/build-collector.sh`` (``make test`` builds it).

    Skips locally, fails in CI, when it has not been built for the current sources.
    """
    path = subprocess.run(
        ["bash", str(_ROOT / "scripts" / "build-collector.sh"), "--path"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip()
    if not os.access(path, os.X_OK):
        message = f"the test Collector is not built ({path}); run scripts/build-collector.sh (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


class OtelCollector:
    """A running test Collector; its ports come from the shipped configs' ``${env:...}`` variables."""

    def __init__(self, proc: subprocess.Popen[bytes], env: Mapping[str, str], log_path: Path) -> None:
        self.proc = proc
        self.env = dict(env)
        self.log_path = log_path

    def endpoint(self, var: str) -> str:
        """The value the Collector was started with for *var* (e.g. ``OTELCOL_OTLP_HTTP_ENDPOINT``)."""
        return self.env[var]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def otel_collector(config: Path, env: Mapping[str, str] | None = None) -> Iterator[OtelCollector]:
    """Run the test Collector with the *config* file, every listener on a free loopback port.

    *env* sets more ``OTELCOL_*`` variables (e.g. the remote-write or traces endpoint) or
    overrides a port. Yields once the health_check extension reports the Collector ready.
    """
    binary = collector_binary()
    ports = {
        "OTELCOL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_PROMETHEUS_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_HEALTH_CHECK_ENDPOINT": f"127.0.0.1:{free_port()}",
        "OTELCOL_TELEMETRY_HOST": "127.0.0.1",
        "OTELCOL_TELEMETRY_PORT": str(free_port()),
        **(env or {}),
    }
    with tempfile.TemporaryDirectory(prefix="mlops-otelcol-") as tmp:
        log_path = Path(tmp) / "otelcol.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([binary, "--config", f"file:{config}"], env={**os.environ, **ports},
                                    stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        collector = OtelCollector(proc, ports, log_path)
        health = f"http://{ports['OTELCOL_HEALTH_CHECK_ENDPOINT']}/"
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1) as r:
                    if r.status == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Collector did not become ready:\n{collector.log()}")
                time.sleep(0.1)
            yield collector
        finally:
            _stop(proc)


class OtlpTraceSink:
    """An OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) keeping every span it is sent.

    The Collector's ``otlp_http`` exporter is the client: this is where its traces pipeline ends
    in the tests. ``spans()`` returns ``(resource attributes, span)`` pairs of the decoded
    ``opentelemetry.proto`` messages.
    """

    def __init__(self) -> None:
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.requests: list[Any] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import gzip

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                with sink._lock:
                    sink.requests.append(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-trace-sink", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        with self._lock:
            requests = list(self.requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = {a.key: _any_value(a.value) for a in rs.resource.attributes}
                out.extend((resource, span) for ss in rs.scope_spans for span in ss.spans)
        return out


def _any_value(value: Any) -> Any:
    """The Python value of an OTLP ``AnyValue`` (scalars; arrays as lists)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def span_attributes(span: Any) -> dict[str, Any]:
    """The attributes of an OTLP span as a dict."""
    return {a.key: _any_value(a.value) for a in span.attributes}


@contextlib.contextmanager
def otlp_trace_sink() -> Iterator[OtlpTraceSink]:
    """An :class:`OtlpTraceSink` serving on a free loopback port for the block."""
    sink = OtlpTraceSink()
    sink.thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()

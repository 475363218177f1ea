"""Real services for the integration tests, started on free loopback ports.

In CI (``CI=true``) a missing binary is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "free_port",
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


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh standalone ``redis-server`` for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="mlops-redis-") as tmp:
        server = RedisServer(free_port(), Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[RedisServer]]:
    """A local Redis Cluster of *nodes* masters, no replicas."""
    cli = require_binary("redis-cli")
    with tempfile.TemporaryDirectory(prefix="mlops-cluster-") as tmp:
        servers: list[RedisServer] = []
        try:
            for i in range(nodes):
                workdir = Path(tmp) / str(i)
                workdir.mkdir()
                port = free_port()
                server = RedisServer(port, workdir, (
                    "--cluster-enabled", "yes", "--cluster-config-file", str(workdir / "nodes.conf"),
                    "--cluster-node-timeout", "2000",
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

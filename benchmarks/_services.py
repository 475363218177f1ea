"""A throwaway ``redis-server`` on a free loopback port for the benchmarks (tests/services.py, minimal)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

__all__ = ["cpu_seconds", "free_port", "redis_server", "uvicorn_process", "uvicorn_server"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(proc: subprocess.Popen[bytes], port: int, what: str, *, timeout: float) -> None:
    """Wait until *proc* accepts connections on 127.0.0.1:*port*; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not listen on {port}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """Terminate *proc*, killing it if it does not exit within *timeout* seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start ``redis-server`` (no persistence) and yield its URL; stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(proc, port, "redis-server", timeout=20)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc, timeout=10)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process *pid* and all its live descendants, in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(p, 0.0) for p in tree)


@contextlib.contextmanager
def uvicorn_server(target: str, *, env: dict[str, str], workers: int = 1, cpus: str | None = None,
                   ) -> Iterator[str]:
    """Run ``uvicorn <target>`` on a free loopback port in a subprocess; yield its base URL."""
    with uvicorn_process(target, env=env, workers=workers, cpus=cpus) as (url, _pid):
        yield url


@contextlib.contextmanager
def uvicorn_process(target: str, *, env: dict[str, str], workers: int = 1, cpus: str | None = None,
                    ) -> Iterator[tuple[str, int]]:
    """Run ``uvicorn <target>`` on a free loopback port in a subprocess; yield its base URL and pid.

    *cpus* pins the server (and its workers) with ``taskset -c`` (which execs: the pid is the server's).
    """
    import sys
    from pathlib import Path

    port = free_port()
    root = str(Path(__file__).resolve().parent.parent)
    full_env = {**os.environ, "PYTHONPATH": root, **env}
    if workers > 1:  # uvicorn's own --workers loses TCP_NODELAY (see benchmarks/_multiworker.py)
        cmd = [sys.executable, "-m", "benchmarks._multiworker", target, str(port), str(workers)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]
    if cpus is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpus, *cmd]
    proc = subprocess.Popen(
        cmd,
        env=full_env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(proc, port, "uvicorn", timeout=90)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        _stop(proc, timeout=20)

"""Faults on a real redis-server under the example service (uvicorn, real HTTP), shared by the chaos tests
(tests/test_robust_chaos.py) and the chaos benchmark (benchmarks/bench_chaos.py).

:class:`CountingStore` wraps the service's store and counts every call by thread and by the SDK
package that made it, so a test can assert that request threads (uvicorn's event loop and the
threadpool) never touch the store.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import httpx

from mlops_otel.stores import JSONValue, Versioned

from ._services import _wait_listening, free_port

__all__ = ["ChaosService", "CountingStore", "RedisProcess", "Sample", "chaos_service", "summarize"]

#: The thread uvicorn's event loop runs on (named by :func:`chaos_service`).
LOOP_THREAD = "chaos-uvicorn-loop"
#: anyio's threadpool (FastAPI runs sync endpoints and dependencies there).
POOL_THREAD = "AnyIO worker thread"
_SDK = "mlops_otel."


def _area(frame: FrameType | None) -> str:
    """Which SDK part called the store: ``ab`` or ``drift`` if either is on the stack, else the innermost part."""
    parts: list[str] = []
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(_SDK) and not name.startswith(_SDK + "stores"):
            parts.append(name[len(_SDK):].split(".", 1)[0].lstrip("_"))
        frame = frame.f_back
    for owner in ("ab", "drift"):
        if owner in parts:
            return owner
    return parts[0] if parts else "app"


class CountingStore:
    """A :class:`StateStore` that counts each call by (thread kind, SDK area, method), then delegates."""

    _METHODS = ("incr", "read_counters", "append", "read_window", "get_document", "compare_and_set", "delete",
                "list_keys", "flush")

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "calls", Counter())
        object.__setattr__(self, "lock", threading.Lock())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)  # e.g. the runtime handing its telemetry to the store

    def _count(self, method: str) -> None:
        name = threading.current_thread().name
        kind = "request" if name in (LOOP_THREAD, POOL_THREAD) else "background"
        area = _area(sys._getframe(2))
        with self.lock:
            self.calls[(kind, area, method)] += 1

    def reset(self) -> None:
        with self.lock:
            self.calls.clear()

    def request_calls(self, *, exclude: Sequence[str] = ()) -> dict[tuple[str, str], int]:
        """Store calls made on request threads, by (area, method), leaving out the areas in *exclude*."""
        with self.lock:
            return {(a, m): n for (k, a, m), n in self.calls.items() if k == "request" and a not in exclude}

    kind = property(lambda self: self.inner.kind)

    def incr(self, key: str, deltas: Mapping[str, float]) -> None:
        self._count("incr")
        self.inner.incr(key, deltas)

    def read_counters(self, key: str) -> dict[str, float]:
        self._count("read_counters")
        result: dict[str, float] = self.inner.read_counters(key)
        return result

    def append(self, key: str, items: Sequence[JSONValue], *, max_len: int) -> None:
        self._count("append")
        self.inner.append(key, items, max_len=max_len)

    def read_window(self, key: str) -> list[JSONValue]:
        self._count("read_window")
        result: list[JSONValue] = self.inner.read_window(key)
        return result

    def get_document(self, key: str) -> Versioned | None:
        self._count("get_document")
        result: Versioned | None = self.inner.get_document(key)
        return result

    def compare_and_set(self, key: str, value: JSONValue, *, expected_version: int) -> bool:
        self._count("compare_and_set")
        return bool(self.inner.compare_and_set(key, value, expected_version=expected_version))

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)

    def list_keys(self, prefix: str) -> list[str]:
        self._count("list_keys")
        result: list[str] = self.inner.list_keys(prefix)
        return result

    def flush(self, timeout: float | None = None) -> bool:
        self._count("flush")
        return bool(self.inner.flush(timeout))

    def close(self) -> None:
        self.inner.close()


class RedisProcess:
    """One redis-server to pause, stall, kill and restart (with or without its AOF data)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, aof: bool = False) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir",
                str(self.workdir), "--protected-mode", "no", "--enable-debug-command", "local",
                "--appendonly", "yes" if aof else "no", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_listening(self.proc, self.port, "redis-server", timeout=20)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def wipe(self) -> None:
        """Remove every data file (a restart then comes up empty)."""
        for path in self.workdir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def command(self, *args: str, timeout: float = 30.0) -> Any:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout)
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def pause(self, seconds: float) -> None:
        """SIGSTOP for *seconds*, then SIGCONT (a hung host: connections stay open, replies stall)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def debug_sleep(self, seconds: float) -> None:
        """``DEBUG SLEEP``: the server blocks every client for *seconds*."""
        self.command("DEBUG", "SLEEP", str(seconds))

    def restart_with_data(self) -> None:
        """kill -9, then restart from the AOF (written with fsync always since :meth:`enable_aof`)."""
        self.kill()
        self.start(aof=True)

    def enable_aof(self) -> None:
        self.command("CONFIG", "SET", "appendfsync", "always")
        self.command("CONFIG", "SET", "appendonly", "yes")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the initial AOF rewrite must finish
            info = self.command("INFO", "persistence")
            if info.get("aof_rewrite_in_progress") == 0 and info.get("aof_enabled") == 1:
                return
            time.sleep(0.05)
        raise TimeoutError("the AOF rewrite did not finish")

    def restart_without_data(self) -> None:
        """kill -9, then restart with its data files gone (a new host, a lost volume)."""
        self.kill()
        self.wipe()
        self.start()

    def restart_empty(self) -> None:
        """A clean shutdown without persistence, then a start: Redis comes back empty."""
        self.stop()
        self.wipe()
        self.start()


@attrs.frozen
class Sample:
    """One request: when it started (monotonic), how long it took, its status and served model version."""

    start: float
    seconds: float
    status: int
    version: str | None


@attrs.define(eq=False)
class ChaosService:
    """The example service on uvicorn in this process, on a counted RedisStore, with a load generator."""

    url: str
    store: CountingStore
    runtime: Any
    redis: RedisProcess
    clients: int = 4
    samples: list[Sample] = attrs.field(factory=list)
    scrapes: list[int] = attrs.field(factory=list)
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _threads: list[threading.Thread] = attrs.field(factory=list)

    def request(self, client: httpx.Client, user: int) -> Sample:
        start = time.monotonic()
        try:
            response = client.post(f"{self.url}/diagnosis/create",
                                   json={"equipment_id": "PMP-001", "user_id": f"user-{user}"})
            status = response.status_code
            version = response.json().get("model_version") if status == 200 else None
        except httpx.HTTPError:
            status, version = 0, None
        return Sample(start, time.monotonic() - start, status, version)

    def _load(self, k: int) -> None:
        with httpx.Client(timeout=60.0) as client:
            i = 0
            while not self._stop.is_set():
                sample = self.request(client, k * 1_000_000 + i)
                self.samples.append(sample)
                if i % 25 == 0:  # a scrape now and then: the fleet view must not touch the store either
                    try:
                        self.scrapes.append(client.get(f"{self.url}/metrics").status_code)
                    except httpx.HTTPError:
                        self.scrapes.append(0)
                i += 1

    @contextlib.contextmanager
    def load(self) -> Iterator[list[Sample]]:
        """Run *clients* closed-loop clients for the block; yields the list their samples go to."""
        self.samples = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, args=(k,), daemon=True) for k in range(self.clients)]
        for t in self._threads:
            t.start()
        try:
            yield self.samples
        finally:
            self._stop.set()
            for t in self._threads:
                t.join(timeout=120)

    def phase(self, fault: Callable[[], None] | None, *, before: float = 0.5, after: float = 1.0,
              steady: float = 2.0) -> tuple[list[Sample], float, float]:
        """Load through *fault* (or *steady* seconds of none); return the samples and the fault's window."""
        with self.load() as samples:
            time.sleep(before)
            began = time.monotonic()
            if fault is None:
                time.sleep(steady)
            else:
                fault()
            ended = time.monotonic()
            time.sleep(after)
        return list(samples), began, ended


def summarize(samples: Sequence[Sample], began: float, ended: float) -> dict[str, Any]:
    """Requests, errors, and the worst latency of the requests that overlapped the fault window."""
    during = [s for s in samples if s.start <= ended and s.start + s.seconds >= began]
    latencies = sorted(s.seconds for s in samples)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
    return {
        "requests": len(samples),
        "errors": sum(1 for s in samples if s.status != 200),
        "worst_during_fault_ms": 1000 * max((s.seconds for s in during), default=0.0),
        "p99_ms": 1000 * p99,
        "versions": sorted({s.version for s in samples if s.version is not None}),
    }


@contextlib.contextmanager
def chaos_service(*, clients: int = 4, champion: str = "v2.2.0") -> Iterator[ChaosService]:
    """The example service (uvicorn in a thread, real HTTP) on a fresh redis-server; *champion* promoted."""
    import uvicorn

    from examples.diagnosis_service.app import MODEL_TYPE, DiagnosisService, create_app
    from examples.diagnosis_service.gnn import GNN_VERSIONS, EquipmentGNN
    from mlops_otel import Runtime
    from mlops_otel.stores.redis import RedisStore

    with tempfile.TemporaryDirectory(prefix="mlops-chaos-") as tmp:
        redis = RedisProcess(Path(tmp))
        redis.start()
        store = CountingStore(RedisStore.from_url(redis.url, prefix="chaos", epoch_interval=0.25))
        runtimes: list[Any] = []

        def factory() -> Runtime:
            runtime = Runtime.create(store=store, fleet_metrics=True)  # type: ignore[arg-type]  # counted store
            runtimes.append(runtime)
            return runtime

        # Models that never fail: every non-200 answer is then the fault's doing.
        service = DiagnosisService(models={v: EquipmentGNN(v, error_probability=0.0) for v in GNN_VERSIONS})
        app = create_app(runtime_factory=factory, instrument_http=False, service=service)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))
        thread = threading.Thread(target=server.run, name=LOOP_THREAD, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the example service did not start")
                time.sleep(0.05)
            runtime = runtimes[0]
            runtime.registry.promote(MODEL_TYPE, champion, reason="chaos: a promoted champion, not the fallback")
            yield ChaosService(f"http://127.0.0.1:{port}", store, runtime, redis, clients=clients)
        finally:
            server.should_exit = True
            thread.join(timeout=60)
            redis.stop()

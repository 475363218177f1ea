"""Where the end-to-end cost goes: profile the running example service under wrk load.

For each case (same env as bench_e2e) this starts one uvicorn worker with the GIL probe
(benchmarks/_gilprobe.py) and measures two phases:

- idle (no requests): how late a thread sleeping 1 ms wakes up (the GIL slices of the
  background threads alone) and each thread's CPU;
- loaded (wrk at a fixed rate): the same, plus, with ``--py-spy``, a ``py-spy record --gil``
  sampling profile of the worker (only the thread holding the GIL is sampled, so each thread's
  share of samples is its share of the GIL), summarised by layer: the example's models,
  uvicorn/asyncio, FastAPI/Starlette, the OTel ASGI middleware and API, mlops-otel.

Run: ``python -m benchmarks.profile_e2e [--py-spy] [--rate 300] [--seconds 10] [--redis-url URL] [CASE ...]``
(py-spy from PyPI; sampling another process needs root or ptrace permission). Not part of
``python -m benchmarks``: its output is the analysis in docs/performance-analysis.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._load import wait_until_ready
from ._services import uvicorn_server
from ._wrk import run_wrk

CASES: dict[str, dict[str, str]] = {
    "without-sdk": {"EXAMPLE_WITHOUT_SDK": "1"},
    "default": {"MLOPS_OTEL_STORE_URL": "memory://", "BENCH_HTTP": "light"},
    "no-http": {"MLOPS_OTEL_STORE_URL": "memory://", "BENCH_HTTP": "none"},
    "otel-http": {"MLOPS_OTEL_STORE_URL": "memory://", "BENCH_HTTP": "otel"},
    "tracing-100": {"MLOPS_OTEL_STORE_URL": "memory://", "BENCH_HTTP": "light", "BENCH_TRACE_RATIO": "1"},
}

_LAYERS = (
    ("app (example models)", ("examples",)),
    ("mlops-otel", ("mlops_otel",)),
    ("OTel ASGI middleware + API/SDK", ("asgi", "trace", "_semconv.py", "http", "context", "propagate", "metrics",
                                        "_decorator.py", "util", "sdk", "exporter", "baggage", "composite.py",
                                        "utils.py", "opentelemetry", "google")),
    ("FastAPI/Starlette/pydantic", ("fastapi", "starlette", "pydantic", "pydantic_core", "anyio")),
    ("uvicorn/asyncio/h11", ("uvicorn", "h11", "asyncio", "selectors.py", "click", "<frozen runpy>")),
)


def _layer(frame: str) -> str | None:
    m = re.search(r"\(([^()]*?):\d+\)$", frame)
    if not m:
        return None
    top = m.group(1).split("/")[0]
    if top.startswith("<attrs generated methods examples"):
        return _LAYERS[0][0]
    return next((name for name, tops in _LAYERS if top in tops), None)


def summarise_pyspy(raw: Path) -> dict[str, Any]:
    """Share of GIL samples per thread, and of the main thread's samples per layer (innermost known frame)."""
    threads: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        name = frames[0].split(": ", 1)[-1]
        threads[name] += n
        if name == "MainThread":
            layer = next((x for f in reversed(frames[1:]) if (x := _layer(f))), "other (stdlib, C)")
            layers[layer] += n
    total, main = sum(threads.values()) or 1, sum(layers.values()) or 1
    return {"gil_share": {k: v / total for k, v in threads.most_common()},
            "main_thread_layers": {k: v / main for k, v in layers.most_common()}, "samples": total}


def _read(path: Path) -> dict[str, Any]:
    for _ in range(50):
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"no probe output at {path}")


def _phase(probe: Path, seconds: float, load: Any = None) -> dict[str, Any]:
    probe.with_suffix(".reset").touch()
    time.sleep(1.2)  # the probe resets within 0.5 s
    before = _read(probe)
    started = time.perf_counter()
    extra = load() if load is not None else time.sleep(seconds)
    time.sleep(0.6)
    after = _read(probe)
    elapsed = time.perf_counter() - started
    cpu = {name: {"cpu_ms_per_s": (t["cpu_s"] - before["threads"].get(name, {}).get("cpu_s", 0)) * 1000 / elapsed,
                  "wakeups_per_s": (t["wakeups"] - before["threads"].get(name, {}).get("wakeups", 0)) / elapsed}
           for name, t in after["threads"].items() if name != "bench-gil-probe"}
    return {"probe": {k: v for k, v in after.items() if k not in ("threads", "pid")}, "threads": cpu,
            "extra": extra, "pid": after["pid"]}


def profile(case: str, rate: float, seconds: float, pyspy: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlops-profile-") as tmp:
        probe = Path(tmp) / "probe.json"
        env = {**CASES[case], "BENCH_GIL_PROBE": str(probe)}
        with uvicorn_server("benchmarks._e2e_app:app", env=env) as url:
            ids = wait_until_ready(url)
            run_wrk(url, rate=rate, seconds=1, equipment_ids=ids)  # warm-up
            idle = _phase(probe, seconds)

            def load() -> dict[str, Any]:
                spy = None
                raw = Path(tmp) / "pyspy.txt"
                binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                if pyspy:
                    pid = _read(probe)["pid"]
                    spy = subprocess.Popen([binary, "record", "--pid", str(pid), "--gil", "--threads", "-r", "200",
                                            "-d", str(int(seconds)), "--format", "raw", "--nonblocking",
                                            "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                res = run_wrk(url, rate=rate, seconds=seconds, equipment_ids=ids)
                out: dict[str, Any] = {"p50_ms": res.percentile(50), "p99_ms": res.percentile(99),
                                       "p99.9_ms": res.percentile(99.9), "sent": res.sent, "late": res.late}
                if spy is not None:
                    spy.wait(timeout=seconds + 60)
                    out["py_spy"] = summarise_pyspy(raw) if raw.exists() else {"error": spy.stderr and
                                                                                spy.stderr.read().decode()[-500:]}
                return out

            loaded = _phase(probe, seconds, load)
    return {"case": case, "rate": rate, "idle": idle, "loaded": loaded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_e2e")
    parser.add_argument("cases", nargs="*", default=["without-sdk", "default"], help=", ".join(CASES))
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--py-spy", action="store_true")
    parser.add_argument("--redis-url", help="run the SDK cases on this Redis (fleet metrics on) instead of memory")
    args = parser.parse_args(argv)
    if args.redis_url:
        for env in CASES.values():
            if "MLOPS_OTEL_STORE_URL" in env:
                env["MLOPS_OTEL_STORE_URL"] = args.redis_url
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    for case in args.cases:
        print(json.dumps(profile(case, args.rate, args.seconds, args.py_spy), indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

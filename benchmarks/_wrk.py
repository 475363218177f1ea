"""Drive the example service with wrk at a fixed request rate (open loop, see wrk_open_loop.lua).

wrk is a C program: the load generator does not compete with the service for Python's CPU (or
its GIL), and its per-request cost is a few microseconds. Each connection runs in its own wrk
thread on a fixed schedule, so the request rate is what was asked however slow the answers;
latencies are measured from each request's due time (coordinated omission corrected).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import attrs

__all__ = ["WrkResult", "require_wrk", "run_wrk"]

SCRIPT = Path(__file__).resolve().parent / "wrk_open_loop.lua"


def require_wrk() -> str:
    """Path of the ``wrk`` binary (Debian package ``wrk``, installed by scripts/install-system-deps.sh)."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian package wrk; run scripts/install-system-deps.sh as root)")
    return binary


@attrs.frozen
class WrkResult:
    """Latencies (ms, coordinated omission corrected) and answers of one paced wrk run."""

    latencies_ms: tuple[float, ...]
    statuses: Counter[int]
    seconds: float
    late: int
    socket_errors: int

    @property
    def sent(self) -> int:
        """Requests answered after the warm-up."""
        return sum(self.statuses.values())

    def percentile(self, q: float) -> float:
        """The *q*-th percentile latency in ms (nearest rank); NaN when nothing was answered."""
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * q / 100) - 1))]


def _parse(path: Path, seconds: float) -> WrkResult:
    lines = path.read_text().splitlines()
    if not lines or not lines[0].startswith("#"):
        raise RuntimeError(f"wrk wrote no result to {path}")
    fields = dict(item.split("=", 1) for item in lines[0][1:].split())
    statuses: Counter[int] = Counter()
    for part in filter(None, fields.get("statuses", "").split(",")):
        code, n = part.split(":")
        statuses[int(code)] += int(n)
    errors = sum(int(fields[k]) for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout"))
    latencies = tuple(float(v) / 1000 for v in lines[1:] if v)
    return WrkResult(latencies, statuses, seconds, int(fields["late"]), errors)


def run_wrk(
    url: str,
    *,
    rate: float,
    seconds: float,
    equipment_ids: Sequence[str],
    connections: int = 4,
    warmup_seconds: float = 1.0,
    cpus: str | None = None,
) -> WrkResult:
    """POST diagnosis requests to *url* at *rate* per second for *seconds* (plus the warm-up).

    *connections* wrk threads of one connection each share the schedule; answers in the first
    *warmup_seconds* are not recorded. *cpus* pins wrk with ``taskset -c`` (e.g. ``"1"``).
    """
    wrk = require_wrk()
    with tempfile.TemporaryDirectory(prefix="mlops-bench-wrk-") as tmp:
        out = Path(tmp) / "latencies.txt"
        env = {
            **os.environ, "WRK_RATE": f"{rate:g}", "WRK_CONNECTIONS": str(connections),
            "WRK_IDS": ",".join(equipment_ids), "WRK_OUT": str(out), "WRK_WARMUP_S": f"{warmup_seconds:g}",
        }
        duration = max(1, round(seconds + warmup_seconds))
        cmd = [wrk, f"-t{connections}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
               "-s", str(SCRIPT), url]
        if cpus is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", cpus, *cmd]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]}{proc.stdout[-2000:]}")
        return _parse(out, duration - warmup_seconds)


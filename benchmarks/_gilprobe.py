"""In-process probes for the end-to-end profile: GIL wait of a sleeping thread, CPU per thread.

:class:`GilProbe` runs a thread that sleeps 1 ms in a loop and records how late each wake-up
is. A thread waking from ``sleep`` must take the GIL back, so its lateness is how long some
other thread held the GIL (up to the switch interval, 5 ms by default) plus scheduling delay:
the same wait the event loop has after ``select`` returns. With the service idle, the lateness
comes from the background threads (flushers, drift checks, fleet merge, OTLP push), which is
how their GIL slices are measured without editing them.

:func:`thread_cpu` reads ``/proc/self/task/<tid>/stat`` for every Python thread: CPU seconds
and voluntary context switches (wake-ups), by thread name.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["GilProbe", "thread_cpu"]

_TICK = 0.01  # USER_HZ is 100 on Linux


def thread_cpu() -> dict[str, dict[str, float]]:
    """CPU seconds and voluntary context switches of each live Python thread, by name."""
    out: dict[str, dict[str, float]] = {}
    for t in threading.enumerate():
        if t.native_id is None:
            continue
        task = Path(f"/proc/self/task/{t.native_id}")
        try:
            fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
            status = task.joinpath("status").read_text()
        except OSError:
            continue
        switches = next((int(line.split()[1]) for line in status.splitlines()
                         if line.startswith("voluntary_ctxt_switches")), 0)
        name = t.name if t.name not in out else f"{t.name}#{t.native_id}"
        out[name] = {"cpu_s": (int(fields[11]) + int(fields[12])) * _TICK, "wakeups": switches}
    return out


class GilProbe:
    """A thread sleeping *period* s in a loop; records each wake-up's lateness (µs)."""

    def __init__(self, path: str, period: float = 0.001) -> None:
        self._path = Path(path)
        self._period = period
        self._late_us: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="bench-gil-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period, clock = self._period, time.perf_counter
        last_dump = clock()
        while not self._stop.is_set():
            start = clock()
            time.sleep(period)
            now = clock()
            with self._lock:
                self._late_us.append((now - start - period) * 1e6)
            if now - last_dump > 0.5:
                last_dump = now
                reset = self._path.with_suffix(".reset")
                if reset.exists():  # the profiler asks for a new phase
                    reset.unlink()
                    self.reset()
                self.dump()

    def reset(self) -> None:
        """Forget the wake-ups so far (creating ``<path>.reset`` asks for this from outside)."""
        with self._lock:
            self._late_us.clear()

    def dump(self) -> None:
        """Write the lateness percentiles and the threads' CPU to the probe's file (JSON)."""
        with self._lock:
            late = sorted(self._late_us)
        stats: dict[str, Any] = {"n": len(late), "pid": os.getpid(), "threads": thread_cpu()}
        if late:
            for q in (50, 99, 99.9):
                stats[f"p{q}_us"] = late[min(len(late) - 1, int(len(late) * q / 100))]
            stats["max_us"] = late[-1]
            stats["over_1ms"] = sum(1 for v in late if v > 1000)
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(self._path)

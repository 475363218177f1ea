"""Memory: peak RSS of a process holding 100 model versions' metrics and 100 drift detectors.

Method: each case runs 3 times in a fresh interpreter (median, min and max); "per item" divides
the growth over the baseline by the items held (100, or 200 for both in one process).

Each case runs in a fresh subprocess and reports its peak resident set size
(``VmHWM``); the baseline process imports the same modules and does nothing else,
so the difference is what the state itself costs. Every drift detector has a full
1,000-sample production window and a 1,000-sample reference.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = "memory"
ROOT = Path(__file__).resolve().parent.parent

_PRELUDE = """
import json
import numpy as np
import scipy.stats  # imported by the drift statistics; counted in the baseline
from mlops_otel import Runtime
rt = Runtime.create()
"""
_VERSIONS = """
for i in range(100):
    v = f"v{i}"
    rt.registry.register("gnn", v)
    for _ in range(20):
        rt.telemetry.record_gnn_metrics(v, 12.0, 0.3, 0.9)
        rt.telemetry.record_rag_metrics(v, 800.0, 600)
        rt.telemetry.record_request("success", v, 0.9, "create_diagnosis")
        rt.registry.update_metrics("gnn", v, 12.0, 0.9, error=False)
"""
_DETECTORS = """
rng = np.random.default_rng(0)
for i in range(100):
    d = rt.drift.get_detector("gnn", f"v{i}")
    d.set_reference(anomaly_scores=rng.random(1000), confidences=rng.random(1000))
    d.add_production_samples(rng.random(1000), rng.random(1000))
    d.get_drift_report()
"""
_CASES = {
    "baseline (imports, empty runtime)": "",
    "100 model versions: metrics + registry": _VERSIONS,
    "100 drift detectors (full windows)": _DETECTORS,
    "both in one process": _VERSIONS + _DETECTORS,
}
# VmHWM is the peak RSS of this process image; ru_maxrss would also count the pages the child
# shared with its (possibly large) parent between fork and exec.
_REPORT = """
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"maxrss_kib": int(hwm.split()[1])}))
"""


def _peak_kib(body: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PRELUDE + body + _REPORT], cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    return int(json.loads(out.strip().splitlines()[-1])["maxrss_kib"])


def run(quick: bool = False) -> list[dict[str, Any]]:
    repeat = 1 if quick else 3
    peaks = {name: sorted(_peak_kib(body) for _ in range(repeat)) for name, body in _CASES.items()}
    per_item = {"both in one process": 200}
    base = peaks["baseline (imports, empty runtime)"][len(peaks["baseline (imports, empty runtime)"]) // 2]
    rows = []
    for name, values in peaks.items():
        median = values[len(values) // 2]
        rows.append({"bench": BENCH, "case": name, "peak_rss_mib": median / 1024,
                     "over_baseline_mib": (median - base) / 1024,
                     "per_item_kib": (median - base) / per_item.get(name, 100) if median != base else 0.0,
                     "repeat": repeat, "min_mib": values[0] / 1024, "max_mib": values[-1] / 1024})
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)

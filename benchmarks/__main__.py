"""Run every benchmark side by side in one process and write docs/performance.md.

``python -m benchmarks`` (full run, regenerates the report) or
``python -m benchmarks --quick`` (smoke mode: tiny sizes, prints only; ``make test`` runs it
through tests/test_benchmarks.py so the benchmarks never rot).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import attrs

MODULES = (
    "bench_hotpath",
    "bench_request",
    "bench_spans",
    "bench_scrape",
    "bench_stores",
    "bench_ab",
    "bench_ab_decisions",
    "bench_drift",
    "bench_memory",
    "bench_service",
    "bench_http",
    "bench_e2e",
    "bench_chaos",
    "bench_shadow",
    "bench_rollout",
    "bench_ui",
)
REPORT = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
_BEGIN, _END = "<!-- bench:begin -->", "<!-- bench:end -->"


def as_dict(row: Any) -> dict[str, Any]:
    """A benchmark row (attrs instance or mapping) as a plain dict."""
    return attrs.asdict(row) if attrs.has(type(row)) else dict(row)


def machine() -> str:
    """A one-paragraph description of the machine the numbers come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    packages = ("numpy", "scipy", "opentelemetry-sdk", "prometheus-client", "redis", "growthbook", "river")
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}){mem}; "
        f"Python {platform.python_version()}, " + ", ".join(f"{p} {v(p)}" for p in packages)
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e6:
            return f"{value:,.2f}"
        return f"{value:.3g}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Rows as a markdown table (columns in first-seen order)."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns and k != "bench"]
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return out


def run_all(quick: bool, only: list[str] | None = None) -> list[str]:
    """Run the benchmarks; return the report's markdown lines."""
    lines = [f"Measured {datetime.date.today().isoformat()} on: {machine()}.", ""]
    lines.append("Every figure below comes from this one run (`python -m benchmarks`); each row states its "
                 "method (n operations per timed run, repeated `repeat` times; median with min and max).")
    for name in MODULES:
        if only and name not in only:
            continue
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                continue  # not written yet
            raise
        started = time.perf_counter()
        rows = [as_dict(r) for r in module.run(quick=quick)]
        elapsed = time.perf_counter() - started
        lines += ["", f"## {name.removeprefix('bench_')}", ""]
        doc = (module.__doc__ or "").strip()
        if doc:
            lines += [doc, ""]
        lines += table(rows)
        summary = getattr(module, "summary", None)
        if callable(summary):
            lines += ["", *summary(rows)]
        lines += ["", f"_{elapsed:.1f} s for this section._"]
        print(f"[bench] {name}: {len(rows)} rows in {elapsed:.1f}s", file=sys.stderr, flush=True)
    return lines


def write_report(lines: list[str]) -> None:
    """Replace the generated part of docs/performance.md with *lines*."""
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else f"# Performance\n\n{_BEGIN}\n{_END}\n"
    head, rest = text.split(_BEGIN, 1)
    tail = rest.split(_END, 1)[1]
    REPORT.write_text(head + _BEGIN + "\n" + "\n".join(lines) + "\n" + _END + tail, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, report not written")
    parser.add_argument("--only", nargs="*", help="run only these modules (e.g. bench_hotpath)")
    args = parser.parse_args(argv)
    lines = run_all(args.quick, args.only)
    if args.quick or args.only:
        print("\n".join(lines))
    else:
        write_report(lines)
        print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

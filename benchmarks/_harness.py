"""Shared timing helpers for the benchmarks: medians of repeated runs, with min and max."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import attrs

__all__ = ["Row", "time_per_call"]


@attrs.frozen
class Row:
    """One measured case: cost per operation in microseconds (median, min, max over *repeat* runs)."""

    bench: str
    case: str
    median_us: float
    min_us: float
    max_us: float
    n: int
    repeat: int
    note: str = ""


def time_per_call(fn: Callable[[int], object], n: int, repeat: int, *, warmup: int | None = None) -> list[float]:
    """Seconds per operation for *repeat* runs of ``fn(n)`` (which performs *n* operations)."""
    fn(warmup if warmup is not None else max(1, min(n, 1000)))
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(n)
        runs.append((time.perf_counter() - start) / n)
    return runs


def row(bench: str, case: str, runs: list[float], n: int, note: str = "") -> Row:
    """Summarise *runs* (seconds per operation) as a :class:`Row` in microseconds."""
    return Row(bench, case, statistics.median(runs) * 1e6, min(runs) * 1e6, max(runs) * 1e6, n, len(runs), note)

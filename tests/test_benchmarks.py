"""Smoke mode of every benchmark: they run, and their rows are well-formed (no timing asserts)."""

from __future__ import annotations

import importlib
import math

import pytest

from benchmarks.__main__ import MODULES, as_dict, table

PRESENT = []
for _name in MODULES:
    try:
        importlib.import_module(f"benchmarks.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"benchmarks.{_name}":
            raise
    else:
        PRESENT.append(_name)


@pytest.mark.parametrize("name", PRESENT)
def test_benchmark_smoke(name: str) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    rows = [as_dict(r) for r in module.run(quick=True)]
    assert rows, f"{name} produced no rows"
    for r in rows:
        # a measurement is a number (counts too: simulation rows report runs and rates as formatted text)
        numbers = {k: float(v) for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numbers, f"{name} row has no measurements: {r}"
        assert all(math.isfinite(v) for v in numbers.values()), r
        if {"min_us", "median_us", "max_us"} <= set(r):
            assert 0 < r["min_us"] <= r["median_us"] <= r["max_us"], r
    assert len(table(rows)) == len(rows) + 2
    summary = getattr(module, "summary", None)
    if callable(summary):
        assert all(isinstance(line, str) and line for line in summary(rows))


def test_hotpath_cases_are_measured_side_by_side() -> None:
    from benchmarks import bench_hotpath

    cases = {r.case for r in bench_hotpath.run(quick=True)}
    assert cases == {"uninstrumented", "mlops-otel (aggregate)", "prometheus_client pre-bound",
                     "prometheus_client .labels()", "OTel SDK instruments",
                     "mlops-otel (aggregate, sampled span: exemplars)"}

"""Seeded rollout simulations (the small version of benchmarks/bench_rollout.py, same step rule).

Exact 95 % Clopper-Pearson intervals: a goal counts as met when the observed
share is at least the goal or the goal lies inside the interval, and the share
is far from failing it (the benchmark's 2,000-run tables in docs/rollout.md
carry the precise figures).
"""

from __future__ import annotations

import pytest

from benchmarks.bench_rollout import BASE, WORSE_30, simulate
from mlops_otel.shadow import clopper_pearson

pytestmark = pytest.mark.slow

RUNS = 150


def test_a_30_percent_worse_challenger_never_passes_the_first_step() -> None:
    out = simulate(BASE, WORSE_30, runs=RUNS, seed=11)
    stayed = int((out.highest == 0).sum())
    assert clopper_pearson(stayed, RUNS)[1] >= 0.99
    assert stayed >= RUNS - 1
    assert (out.ended == "rollback").mean() >= 0.95  # and it is rolled back, not just held


def test_a_healthy_challenger_reaches_full_rollout() -> None:
    out = simulate(BASE, BASE, runs=RUNS, seed=12)
    full = int((out.ended == "handover").sum())
    assert clopper_pearson(full, RUNS)[1] >= 0.95
    assert full >= 0.9 * RUNS
    assert (out.highest[out.ended == "handover"] == 3).all()

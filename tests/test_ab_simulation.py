"""Seeded simulations: the decision rule keeps its error rates however often it is evaluated.

Sufficient statistics are simulated directly, one batch per look and arm
(errors ~ Binomial, batch means ~ Normal, within-batch sums of squares ~
sd^2 chi-square), and every look of every simulated test is decided by the
real :func:`mlops_otel.ab.evaluate_batch` in one numpy pass.

``python -m tests.test_ab_simulation`` prints the tables of docs/ab-testing.md.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import pytest

from mlops_otel.ab import ABTestConfig, Decision, StatsBatch, evaluate, evaluate_batch
from mlops_otel.registry import Moments, SufficientStats

pytestmark = pytest.mark.slow


@attrs.frozen
class Arm:
    """True behaviour of a variant."""

    error_rate: float = 0.05
    latency: tuple[float, float] = (50.0, 10.0)  # mean, sd in ms
    confidence: tuple[float, float] = (0.8, 0.1)


@attrs.frozen
class Outcome:
    """First non-``continue`` decision of each simulated test and the per-arm sample size it came at."""

    decisions: npt.NDArray[np.str_]
    at: npt.NDArray[np.int64]

    def rate(self, *decisions: str) -> float:
        return float(np.isin(self.decisions, decisions).mean())

    def median_at(self, decision: str) -> float:
        hit = self.at[self.decisions == decision]
        return float(np.median(hit)) if hit.size else float("nan")


def _arm_batches(rng: np.random.Generator, arm: Arm, batch: int, runs: int, looks: int) -> StatsBatch:
    n = np.broadcast_to(np.arange(1, looks + 1) * float(batch), (runs, looks))
    errors = np.cumsum(rng.binomial(batch, arm.error_rate, size=(runs, looks)), axis=1).astype(float)
    moments: list[npt.NDArray[np.float64]] = []
    for mean, sd in (arm.latency, arm.confidence):
        batch_mean = rng.normal(mean, sd / np.sqrt(batch), size=(runs, looks))
        within_ss = sd**2 * rng.chisquare(batch - 1, size=(runs, looks))
        total = np.cumsum(batch * batch_mean, axis=1)
        total_sq_about_mean = np.cumsum(within_ss, axis=1)
        # Sum of squares about the running mean: within-batch plus between-batch parts.
        between = np.cumsum(batch * batch_mean**2, axis=1) - total**2 / n
        moments += [n, total / n, (total_sq_about_mean + np.maximum(between, 0.0)) / (n - 1)]
    return StatsBatch(*(np.ascontiguousarray(x).ravel() for x in (n, errors, *moments)))


def simulate(control: Arm, treatment: Arm, *, runs: int, looks: int, seed: int, batch: int = 100,
             treatment_batch: int | None = None, **config: Any) -> Outcome:
    """*runs* tests, each evaluated after every *batch* results per arm, *looks* times."""
    rng = np.random.default_rng(seed)
    t_batch = batch if treatment_batch is None else treatment_batch
    pct = 100.0 * t_batch / (batch + t_batch)
    cfg = ABTestConfig(name="sim", model_type="m", control_version="a", treatment_version="b",
                       treatment_traffic_pct=pct, **config)
    c = _arm_batches(rng, control, batch, runs, looks)
    t = _arm_batches(rng, treatment, t_batch, runs, looks)
    decided = evaluate_batch(c, t, cfg).reshape(runs, looks)
    stopped = decided != Decision.CONTINUE.value
    first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), looks - 1)
    decisions = np.where(stopped.any(axis=1), decided[np.arange(runs), first], Decision.CONTINUE.value)
    return Outcome(decisions, (first + 1) * t_batch)


BASE = Arm()
AA_RUNS = 2000
FAST = {"min_samples": 100}  # decide from the first look: the strictest setting for the A/A test


def test_aa_promote_or_rollback_in_at_most_5_percent() -> None:
    out = simulate(BASE, BASE, runs=AA_RUNS, looks=100, seed=1, **FAST)
    assert out.rate("promote", "rollback") <= 0.05
    assert out.rate("halt") == 0.0  # equal counts: no sample ratio mismatch


def test_aa_with_default_settings() -> None:
    out = simulate(BASE, BASE, runs=AA_RUNS, looks=100, seed=2)
    assert out.rate("promote", "rollback") <= 0.05


def test_aa_with_rare_errors_and_unequal_split() -> None:
    rare = Arm(error_rate=0.005)
    out = simulate(rare, rare, runs=AA_RUNS, looks=100, seed=3, treatment_batch=25, **FAST)
    assert out.rate("promote", "rollback") <= 0.05


def test_error_rate_5_to_8_percent_rolls_back_within_5000() -> None:
    out = simulate(BASE, attrs.evolve(BASE, error_rate=0.08), runs=1000, looks=50, seed=4, **FAST)
    assert out.rate("rollback") >= 0.80


def test_confidence_plus_001_promotes_within_10000() -> None:
    better = attrs.evolve(BASE, confidence=(0.81, 0.1))
    out = simulate(BASE, better, runs=1000, looks=100, seed=5, **FAST)
    assert out.rate("promote") >= 0.80


def test_52_48_over_20000_users_halts() -> None:
    cfg = ABTestConfig(name="srm", model_type="m", control_version="a", treatment_version="b",
                       treatment_traffic_pct=50.0)
    stats = [SufficientStats(n, 0, Moments(n, 50.0 * n, 2500.0 * n + 100.0 * (n - 1)),
                             Moments(n, 0.3 * n, 0.09 * n + 0.01 * (n - 1), 0.5)) for n in (10_400, 9_600)]
    assert evaluate(stats[0], stats[1], cfg).decision is Decision.HALT
    assert evaluate(stats[1], stats[0], cfg).decision is Decision.HALT
    # And with assignment noise: 20,000 users each sent to treatment with probability 0.48.
    rng = np.random.default_rng(6)
    n_t = rng.binomial(20_000, 0.48, size=1000).astype(float)
    n_c = 20_000.0 - n_t
    ones = np.ones_like(n_t)

    def arm(n: npt.NDArray[np.float64]) -> StatsBatch:
        return StatsBatch(n, 0.05 * n, n, 50.0 * ones, 100.0 * ones, n, 0.8 * ones, 0.01 * ones)

    decisions = evaluate_batch(arm(n_c), arm(n_t), cfg)
    # chi-square ~ noncentral with mean 33: P(> 10.83, the 0.001 critical value) is about 99 %.
    assert (decisions == "halt").mean() >= 0.95


# ---------------------------------------------------------------- doc tables
def _naive_aa_rate(runs: int, looks: int, seed: int) -> float:
    """Fixed-horizon Welch z-tests at alpha/3 per metric, looked at after every batch (the peeking trap)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    z_crit = stats.norm.isf(0.05 / 6)
    hit = np.zeros(runs, dtype=bool)
    for _ in range(3):  # three metrics, each a random walk of standardised differences under A/A
        z = rng.standard_normal((runs, looks)).cumsum(axis=1) / np.sqrt(np.arange(1, looks + 1))
        hit |= (np.abs(z) > z_crit).any(axis=1)
    return float(hit.mean())


def _srm_false_halt_rate(runs: int, looks: int, batch: int, p: float, seed: int) -> float:
    from scipy import special

    rng = np.random.default_rng(seed)
    n_t = np.cumsum(rng.binomial(batch, p, size=(runs, looks)), axis=1)
    total = np.arange(1, looks + 1) * batch
    chi2 = (n_t * (1 - p) - (total - n_t) * p) ** 2 / (total * p * (1 - p))
    return float((special.chdtrc(1, chi2) < 0.001).any(axis=1).mean())


def main() -> None:
    rows = []
    scenarios: list[tuple[str, Arm, Arm, dict[str, Any], str]] = [
        ("A/A, 50/50, min_samples=100", BASE, BASE, {"runs": AA_RUNS, "looks": 100, **FAST}, "promote/rollback"),
        ("A/A, 50/50, defaults (min_samples=1000)", BASE, BASE, {"runs": AA_RUNS, "looks": 100}, "promote/rollback"),
        ("A/A, 80/20, error rate 0.5 %", Arm(error_rate=0.005), Arm(error_rate=0.005),
         {"runs": AA_RUNS, "looks": 100, "treatment_batch": 25, **FAST}, "promote/rollback"),
        ("errors 5 % -> 8 %, up to 5,000/arm", BASE, attrs.evolve(BASE, error_rate=0.08),
         {"runs": 1000, "looks": 50, **FAST}, "rollback"),
        ("confidence +0.01 (sd 0.1), up to 10,000/arm", BASE, attrs.evolve(BASE, confidence=(0.81, 0.1)),
         {"runs": 1000, "looks": 100, **FAST}, "promote"),
        ("confidence +0.005, up to 10,000/arm", BASE, attrs.evolve(BASE, confidence=(0.805, 0.1)),
         {"runs": 1000, "looks": 100, **FAST}, "promote"),
        ("latency +15 % (tolerance 10 %), up to 10,000/arm", BASE, attrs.evolve(BASE, latency=(57.5, 10.0)),
         {"runs": 1000, "looks": 100, **FAST}, "rollback"),
        ("latency +5 % (inside tolerance), up to 10,000/arm", BASE, attrs.evolve(BASE, latency=(52.5, 10.0)),
         {"runs": 1000, "looks": 100, **FAST}, "rollback"),
    ]
    for i, (label, c, t, kw, target) in enumerate(scenarios):
        out = simulate(c, t, seed=100 + i, **kw)
        wanted = target.split("/")
        rows.append((label, kw["runs"], out.rate(*wanted), target, out.median_at(wanted[0])))
    print("| scenario | runs | rate | of decision | median n/arm at decision |")
    print("|---|---|---|---|---|")
    for label, runs, rate, target, median in rows:
        print(f"| {label} | {runs} | {rate:.2%} | {target} | {median:,.0f} |")
    print()
    print(f"naive fixed-horizon tests peeked 100 times (A/A): {_naive_aa_rate(20_000, 100, 7):.1%} wrong decisions")
    for p in (0.5, 0.1):
        rate = _srm_false_halt_rate(20_000, 100, 200, p, 8)
        print(f"SRM chi-square (p<0.001) checked 100 times, {p:.0%} treatment, A/A: {rate:.2%} false halts")


if __name__ == "__main__":
    main()

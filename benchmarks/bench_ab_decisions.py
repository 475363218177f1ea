"""Seeded simulations of the A/B ship rule: error rates however often a test is evaluated.

Each simulated test is evaluated after every batch of results ("a look"); a
run's outcome is its first non-``continue`` decision. Every look of every run
is decided by the real :func:`mlops_otel.ab.evaluate_batch` in one numpy
pass. Assignment is random (each result goes to the treatment with the
configured probability), so batch sizes vary like in production.

Per-batch sums are simulated exactly where a closed form exists (errors are
binomial; normal data and log-normal latencies on the log scale have normal
batch means and chi-square sums of squares) and drawn sample by sample
otherwise (Beta confidences, latencies with rare 100x outliers), chunked so
memory stays bounded. Rates come with Clopper-Pearson 95 % intervals.

``python -m benchmarks.bench_ab_decisions`` prints the table of
docs/ab-testing.md (``--quick`` runs 10x fewer simulations); ``make bench``
puts it in docs/performance.md; ``tests/test_ab_simulation.py`` runs a small,
statistically sound version. Power: samples per arm by which 80 % of runs
decided, over the two-sided fixed-horizon z-test's n at the same alpha.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
from scipy import stats

from mlops_otel.ab import ABTestConfig, Decision, MetricBatch, StatsBatch, evaluate_batch
from mlops_otel.ab._stats import srm_p_value

Array = npt.NDArray[np.float64]
# A sampler draws one metric for `size` results: returns values (for per-sample simulation).
Sampler = Callable[[np.random.Generator, tuple[int, ...]], Array]


@attrs.frozen
class Normal:
    """Normally distributed values (or log-normal, on the log scale): batch sums in closed form."""

    mean: float
    sd: float


@attrs.frozen
class Arm:
    """True behaviour of a variant: error rate, log latency and confidence distributions."""

    error_rate: float = 0.05
    #: Distribution of log(latency ms): log-normal latency, median 50 ms.
    log_latency: Normal | Sampler = Normal(math.log(50.0), 0.3)
    confidence: Normal | Sampler = Normal(0.8, 0.1)


_LOG50 = Normal(math.log(50.0), 0.3)


def heavy_tail(fraction: float = 0.001, factor: float = 100.0, base: Normal = _LOG50) -> Sampler:
    """Log-normal latencies of which *fraction* are *factor* times slower."""

    def draw(rng: np.random.Generator, size: tuple[int, ...]) -> Array:
        x = rng.normal(base.mean, base.sd, size)
        return x + np.where(rng.random(size) < fraction, math.log(factor), 0.0)

    return draw


def beta(a: float, b: float, shift: float = 0.0) -> Sampler:
    """Beta(a, b) confidences (plus *shift*, clipped to [0, 1])."""

    def draw(rng: np.random.Generator, size: tuple[int, ...]) -> Array:
        return np.clip(rng.beta(a, b, size) + shift, 0.0, 1.0)

    return draw


def _batch_sums(rng: np.random.Generator, dist: Normal | Sampler, b: Array) -> tuple[Array, Array]:
    """Sum and sum of squares of *b* values per cell (b: integer array of batch sizes)."""
    if isinstance(dist, Normal):
        safe = np.maximum(b, 1.0)
        mean = rng.normal(dist.mean, dist.sd / np.sqrt(safe))
        within = dist.sd**2 * rng.chisquare(np.maximum(safe - 1.0, 1e-9))
        total = np.where(b > 0, safe * mean, 0.0)
        return total, np.where(b > 0, within * (safe > 1) + safe * mean * mean, 0.0)
    width = int(b.max()) if b.size else 0
    x = dist(rng, (*b.shape, max(width, 1)))
    mask = np.arange(max(width, 1)) < b[..., None]
    x = np.where(mask, x, 0.0)
    return x.sum(axis=-1), (x * x).sum(axis=-1)


def _arm_stats(rng: np.random.Generator, arm: Arm, b: Array) -> StatsBatch:
    """Cumulative statistics after each look, for batch sizes b (runs x looks)."""
    n = np.cumsum(b, axis=1)
    errors = np.cumsum(rng.binomial(b.astype(np.int64), arm.error_rate), axis=1)
    metrics: dict[str, MetricBatch] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        metrics["error_rate"] = MetricBatch(n.ravel(), (errors / n).ravel(), np.zeros(n.size))
        for name, dist in (("latency_ms", arm.log_latency), ("confidence", arm.confidence)):
            s, q = _batch_sums(rng, dist, b)
            cs, cq = np.cumsum(s, axis=1), np.cumsum(q, axis=1)
            mean = cs / n
            var = np.maximum(cq - cs * mean, 0.0) / (n - 1)
            metrics[name] = MetricBatch(n.ravel(), mean.ravel(), var.ravel())
    return StatsBatch(n.ravel(), metrics)


@attrs.frozen
class Outcome:
    """First non-continue decision of each run and the treatment sample size it came at."""

    decisions: npt.NDArray[np.str_]
    at: npt.NDArray[np.float64]

    @property
    def runs(self) -> int:
        return int(self.decisions.size)

    def count(self, *decisions: str) -> int:
        return int(np.isin(self.decisions, decisions).sum())

    def rate(self, *decisions: str) -> float:
        return self.count(*decisions) / self.runs

    def quantile_at(self, decision: str, q: float) -> float:
        """Treatment results by which a fraction *q* of all runs had decided *decision* (inf if fewer)."""
        hit = np.sort(np.where(self.decisions == decision, self.at, np.inf))
        return float(hit[math.ceil(q * self.runs) - 1])


def simulate(control: Arm, treatment: Arm, *, runs: int, looks: int, batch: int, seed: int,
             pct: float = 50.0, chunk: int = 250, **config: Any) -> Outcome:
    """*runs* tests, each evaluated after every *batch* results (both arms together), *looks* times."""
    cfg = ABTestConfig(name="sim", model_type="m", control_version="a", treatment_version="b",
                       treatment_traffic_pct=pct, **config)
    rng = np.random.default_rng(seed)
    decisions, at = [], []
    for start in range(0, runs, chunk):
        r = min(chunk, runs - start)
        bt = rng.binomial(batch, cfg.treatment_fraction, size=(r, looks)).astype(np.float64)
        bc = batch - bt
        c, t = _arm_stats(rng, control, bc), _arm_stats(rng, treatment, bt)
        decided = evaluate_batch(c, t, cfg).reshape(r, looks)
        stopped = decided != Decision.CONTINUE.value
        first = np.where(stopped.any(axis=1), stopped.argmax(axis=1), looks - 1)
        decisions.append(np.where(stopped.any(axis=1), decided[np.arange(r), first], Decision.CONTINUE.value))
        at.append(np.where(stopped.any(axis=1), t.n.reshape(r, looks)[np.arange(r), first], np.inf))
    return Outcome(np.concatenate(decisions), np.concatenate(at))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval of k successes in n trials."""
    a = (1 - level) / 2
    lo = float(stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    hi = float(stats.beta.ppf(1 - a, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def srm_false_halts(runs: int, looks: int, batch: int, p: float, seed: int, alpha: float = 0.001
                    ) -> tuple[int, int]:
    """(halts, runs) of the sequential sample-ratio test on healthy traffic checked after every batch."""
    rng = np.random.default_rng(seed)
    halts = 0
    for start in range(0, runs, 1000):
        r = min(1000, runs - start)
        n_t = np.cumsum(rng.binomial(batch, p, size=(r, looks)), axis=1).astype(np.float64)
        n_c = np.arange(1, looks + 1) * batch - n_t
        halts += int((srm_p_value(n_c, n_t, p) < alpha).any(axis=1).sum())
    return halts, runs


def chi_square_false_halts(runs: int, looks: int, batch: int, p: float, seed: int) -> tuple[int, int]:
    """The same with the repeated chi-square test at 0.001 (the old check), for comparison."""
    from scipy import special

    rng = np.random.default_rng(seed)
    n_t = np.cumsum(rng.binomial(batch, p, size=(runs, looks)), axis=1)
    total = np.arange(1, looks + 1) * batch
    chi2 = (n_t * (1 - p) - (total - n_t) * p) ** 2 / (total * p * (1 - p))
    return int((special.chdtrc(1, chi2) < 0.001).any(axis=1).sum()), runs


# ------------------------------------------------------------------ scenarios
BASE = Arm()
LOOSE = {"max_error_rate_increase": 0.5, "max_latency_increase_pct": 1000.0, "max_confidence_decrease": 0.5}
REALISTIC = Arm(error_rate=0.005, log_latency=Normal(math.log(50.0), 0.5), confidence=beta(50.0, 1.0))


@attrs.frozen
class Scenario:
    """One row of a table: what is simulated and which decisions count."""

    label: str
    control: Arm
    treatment: Arm
    counts: tuple[str, ...]
    kwargs: dict[str, Any]
    goal: str

    def run(self, runs: int, seed: int) -> Outcome:
        return simulate(self.control, self.treatment, runs=runs, seed=seed, **self.kwargs)


def _lat(factor: float) -> Normal:
    return Normal(math.log(50.0 * factor), 0.3)


FALSE = ("promote", "rollback")
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("A/A 50/50, 100 looks of 200", BASE, BASE, FALSE,
             {"looks": 100, "batch": 200, "min_samples": 100}, "false decisions <= 5 %"),
    Scenario("A/A 50/50, 1,000 looks of 20 (many looks)", BASE, BASE, FALSE,
             {"looks": 1000, "batch": 20, "min_samples": 100}, "false decisions <= 5 %"),
    Scenario("A/A 10/90, 0.1 % of latencies 100x (heavy tails)", Arm(log_latency=heavy_tail()),
             Arm(log_latency=heavy_tail()), FALSE, {"looks": 200, "batch": 100, "pct": 10.0, "min_samples": 100},
             "false decisions <= 5 %"),
    Scenario("A/A 10/90, errors 0.5 %, error rate primary", Arm(error_rate=0.005), Arm(error_rate=0.005), FALSE,
             {"looks": 200, "batch": 200, "pct": 10.0, "min_samples": 100, "primary_metric": "error_rate"},
             "false decisions <= 5 %"),
    Scenario("A/A realistic: 10/90, errors 0.5 %, log-normal latency, confidence Beta(50,1), "
             "a look every ~10 treatment results", REALISTIC, REALISTIC, FALSE,
             {"looks": 300, "batch": 100, "pct": 10.0, "min_samples": 100}, "false decisions <= 5 %"),
    Scenario("confidence +0.01, errors 5 % -> 6 % (guardrail breach)", BASE,
             attrs.evolve(BASE, error_rate=0.06, confidence=Normal(0.81, 0.1)), ("promote",),
             {"looks": 100, "batch": 1000, "min_samples": 100}, "promotions <= 5 %"),
    Scenario("latency -10 % (primary), confidence -0.01 (guardrail breach)", BASE,
             attrs.evolve(BASE, log_latency=_lat(0.9), confidence=Normal(0.79, 0.1)), ("promote",),
             {"looks": 100, "batch": 1000, "min_samples": 100, "primary_metric": "latency_ms"},
             "promotions <= 5 %"),
    Scenario("latency -10 % (primary), errors 5 % -> 5.5 % (at the margin)", BASE,
             attrs.evolve(BASE, log_latency=_lat(0.9), error_rate=0.055), ("promote",),
             {"looks": 100, "batch": 1000, "min_samples": 100, "primary_metric": "latency_ms"},
             "promotions <= 5 %"),
    Scenario("errors 5 % -> 8 % (guardrail), up to 10,000 per arm", BASE, attrs.evolve(BASE, error_rate=0.08),
             ("rollback",), {"looks": 100, "batch": 200, "min_samples": 100}, "rollbacks >= 99 %"),
    Scenario("confidence +0.01 alone, up to 100,000 per arm", BASE, attrs.evolve(BASE, confidence=Normal(0.81, 0.1)),
             ("promote",), {"looks": 200, "batch": 1000, "min_samples": 100, "planned_samples": 80_000},
             "promotions >= 95 %"),
)


def fixed_horizon_n(sd_c: float, sd_t: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Per-arm sample size of the two-sided fixed-horizon z-test (50/50)."""
    z = stats.norm.isf(alpha / 2) + stats.norm.isf(1 - power)
    return float(z * z * (sd_c**2 + sd_t**2) / delta**2)


def power_cases() -> list[tuple[str, Arm, Arm, str, str, float]]:
    """(label, control, treatment, primary, decision, fixed-horizon n per arm)."""
    out = []
    for p1 in (0.06, 0.08):
        n = fixed_horizon_n(math.sqrt(0.05 * 0.95), math.sqrt(p1 * (1 - p1)), p1 - 0.05)
        out.append((f"error rate 5 % -> {p1:.0%}", BASE, attrs.evolve(BASE, error_rate=p1), "error_rate",
                    "rollback", n))
    for d in (0.005, 0.01):
        n = fixed_horizon_n(0.1, 0.1, d)
        out.append((f"confidence +{d}", BASE, attrs.evolve(BASE, confidence=Normal(0.8 + d, 0.1)), "confidence",
                    "promote", n))
    return out


def power_ratio(control: Arm, treatment: Arm, primary: str, decision: str, n_fix: float, runs: int,
                seed: int) -> tuple[float, float]:
    """(samples per arm to 80 % power of the primary's sequential test, ratio to the fixed horizon).

    Guardrail margins are opened wide so the primary alone decides; the
    mixture is tuned with ``planned_samples`` = twice the fixed-horizon n per
    arm (both arms' total at the fixed horizon), as a planner would set it.
    """
    batch = max(2, int(2 * n_fix / 50))  # about 50 looks per fixed horizon
    out = simulate(control, treatment, runs=runs, looks=200, batch=batch, seed=seed, min_samples=2,
                   primary_metric=primary, guardrails=LOOSE, planned_samples=int(2 * n_fix), min_events=5)
    n80 = out.quantile_at(decision, 0.8)
    return n80, n80 / n_fix


def _goal_met(goal: str, value: float) -> str:
    op, bound = goal.split()[-3], float(goal.split()[-2])
    return "yes" if (value <= bound if op == "<=" else value >= bound) else "NO"


def run(quick: bool = False, runs: int | None = None) -> list[dict[str, Any]]:
    """Every scenario, power case and sample-ratio case as report rows (``quick``: 10x fewer runs).

    Rates are percentages with their Clopper-Pearson 95 % interval; power rows give the ratio of the
    sequential test's samples per arm at 80 % power to the fixed-horizon z-test's.
    """
    n = runs if runs is not None else (200 if quick else 2000)
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(SCENARIOS):
        out = s.run(n, seed=100 + i)
        k = out.count(*s.counts)
        lo, hi = clopper_pearson(k, n)
        rows.append({"case": s.label, "runs": n, "measure": "/".join(s.counts) + " %",
                     "value": 100.0 * k / n, "ci_low": 100.0 * lo, "ci_high": 100.0 * hi, "goal": s.goal,
                     "met": _goal_met(s.goal, 100.0 * k / n)})
    for j, (label, c, t, primary, decision, n_fix) in enumerate(power_cases()):
        n80, ratio = power_ratio(c, t, primary, decision, n_fix, n, seed=200 + j)
        rows.append({"case": f"power, primary {label} (n/arm {n80:,.0f} vs fixed {n_fix:,.0f})", "runs": n,
                     "measure": "samples ratio x", "value": ratio, "goal": "<= 1.8 x", "met": _goal_met("<= 1.8 x",
                                                                                                       ratio)})
    srm_runs = n * 10
    for p in (0.5, 0.1):
        k, m = srm_false_halts(srm_runs, 1000, 100, p, seed=300)
        lo, hi = clopper_pearson(k, m)
        kc, mc = chi_square_false_halts(min(srm_runs, 5000), 1000, 100, p, seed=301)
        rows.append({"case": f"SRM A/A, {p:.0%} treatment, 1,000 looks of 100 (repeated chi-square: "
                             f"{kc / mc:.2%})", "runs": m, "measure": "false halts %", "value": 100.0 * k / m,
                     "ci_low": 100.0 * lo, "ci_high": 100.0 * hi, "goal": "<= 0.5 %",
                     "met": _goal_met("<= 0.5 %", 100.0 * k / m)})
    return rows


def main(argv: list[str]) -> None:
    rows = run(quick="--quick" in argv)
    print("| case | runs | measure | value | 95 % CI (Clopper-Pearson) | goal | met |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if "ci_low" in r else "-"
        print(f"| {r['case']} | {r['runs']:,} | {r['measure']} | {r['value']:.2f} | {ci} | {r['goal']} "
              f"| {r['met']} |")


if __name__ == "__main__":
    main(sys.argv[1:])

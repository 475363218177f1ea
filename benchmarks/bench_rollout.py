"""Progressive rollout simulations: a harmful challenger stops at its first step, a healthy one ramps.

Each simulated rollout runs the real step rule (:func:`mlops_otel.ab.judge_step`, which calls the
A/B :func:`mlops_otel.ab.evaluate`) on the step's sufficient statistics, looked at every ``look``
treatment results. The statistics are drawn in numpy batches (errors ~ Binomial; latency and
confidence batch means ~ Normal, within-batch sums of squares ~ sd^2 chi-square), so a run of
2,000 rollouts costs about a minute. Schedule 1 -> 5 -> 20 -> 50 %, each step needing ``min_results``
treatment results and non-inferiority (the ship rule's intervals) within the schedule's margins (error
rate +1 pp, latency +10 %, confidence -0.02). A step that has not decided after ``max_per_step`` treatment results counts as
stalled there. Time (``min_seconds``) is not modelled: steps are paced by results only.
Rates carry exact 95 % Clopper-Pearson intervals.

Run: ``python -m benchmarks.bench_rollout`` (``--quick`` for the smoke mode).
"""

from __future__ import annotations

import sys
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from mlops_otel.ab import ABTestConfig, RolloutSchedule, StepDecision, judge_step
from mlops_otel.registry import Moments, SufficientStats
from mlops_otel.shadow import clopper_pearson

BENCH = "rollout"


@attrs.frozen
class Arm:
    """True behaviour of a variant: error rate, latency (mean, sd) in ms, confidence (mean, sd)."""

    error_rate: float = 0.05
    latency: tuple[float, float] = (50.0, 10.0)
    confidence: tuple[float, float] = (0.8, 0.1)


BASE = Arm()
WORSE_30 = attrs.evolve(BASE, error_rate=0.065)  # 30 % worse error rate
#: Rollout margins (looser than the promote rule's default guardrails: +0.5 pp errors, -0.005 confidence).
SCHEDULE = RolloutSchedule.of((1.0, 5.0, 20.0, 50.0), min_results=5000, error_rate_margin=0.01,
                              latency_margin_pct=10.0, confidence_margin=0.02)
CONFIG = ABTestConfig(name="rollout-sim", model_type="m", control_version="a", treatment_version="b")


@attrs.frozen
class Outcome:
    """Per run: the highest step index reached, how it ended, and the treatment results it took."""

    highest: npt.NDArray[np.int64]
    ended: npt.NDArray[np.str_]
    treatment_results: npt.NDArray[np.int64]

    def share(self, mask: npt.NDArray[np.bool_]) -> tuple[float, float, float]:
        k, n = int(mask.sum()), int(mask.size)
        lo, hi = clopper_pearson(k, n)
        return k / n, lo, hi


def _batches(rng: np.random.Generator, arm: Arm, batch: int, runs: int, looks: int) -> list[list[SufficientStats]]:
    """Cumulative statistics of *looks* batches of *batch* results for each of *runs* runs."""
    n = np.broadcast_to(np.arange(1, looks + 1) * float(batch), (runs, looks))
    errors = np.cumsum(rng.binomial(batch, arm.error_rate, size=(runs, looks)), axis=1)
    sums = []
    for (mean, sd), shift in ((arm.latency, 0.0), (arm.confidence, 0.0)):
        batch_mean = rng.normal(mean, sd / np.sqrt(batch), size=(runs, looks)) - shift
        within = sd**2 * rng.chisquare(batch - 1, size=(runs, looks))
        total = np.cumsum(batch * batch_mean, axis=1)
        total_sq = np.cumsum(within + batch * batch_mean**2, axis=1)
        sums.append((total, total_sq, shift))
    (lt, lq, ls), (ct, cq, cs) = sums
    return [[SufficientStats(int(n[r, j]), int(errors[r, j]), Moments(int(n[r, j]), float(lt[r, j]), float(lq[r, j]), ls),
                             Moments(int(n[r, j]), float(ct[r, j]), float(cq[r, j]), cs))
             for j in range(looks)] for r in range(runs)]


def simulate(control: Arm, treatment: Arm, *, runs: int, seed: int, schedule: RolloutSchedule = SCHEDULE,
             look: int = 1000, max_per_step: int = 40_000, config: ABTestConfig = CONFIG) -> Outcome:
    """*runs* rollouts of *treatment* against *control* through *schedule*."""
    rng = np.random.default_rng(seed)
    looks = max_per_step // look
    highest = np.zeros(runs, dtype=np.int64)
    ended = np.full(runs, "stalled", dtype=object)
    used = np.zeros(runs, dtype=np.int64)
    alive = np.arange(runs)
    for step_index, step in enumerate(schedule.steps):
        if alive.size == 0:
            break
        frac = float(step.traffic_pct) / 100.0
        c_batch = max(2, round(look * (1.0 - frac) / frac))
        t_stats = _batches(rng, treatment, look, alive.size, looks)
        c_stats = _batches(rng, control, c_batch, alive.size, looks)
        advanced = []
        for i, run in enumerate(alive):
            highest[run] = step_index
            for j in range(looks):
                verdict = judge_step(c_stats[i][j], t_stats[i][j], config, schedule, step_index, 0.0)
                if verdict.decision is StepDecision.HOLD:
                    continue
                used[run] += (j + 1) * look
                if verdict.decision is StepDecision.ADVANCE:
                    advanced.append(run)
                else:
                    ended[run] = verdict.decision.value
                break
            else:
                used[run] += looks * look
        alive = np.asarray(advanced, dtype=np.int64)
    return Outcome(highest, ended.astype(str), used)


def scenarios(runs: int, max_per_step: int) -> list[dict[str, Any]]:
    """The issue's two goals as table rows."""
    rows = []
    for name, arm, seed in (("healthy (A/A)", BASE, 1), ("error rate 5% -> 6.5% (30% worse)", WORSE_30, 2)):
        out = simulate(BASE, arm, runs=runs, seed=seed, max_per_step=max_per_step)
        first_only = out.share(out.highest == 0)
        full = out.share(out.ended == "handover")
        rolled = out.share(out.ended == "rollback")
        done = out.ended == "handover"
        rows.append({
            "bench": BENCH, "case": name, "runs": runs,
            "stayed at step 1 (1%)": f"{first_only[0]:.2%} [{first_only[1]:.2%}, {first_only[2]:.2%}]",
            "reached full rollout": f"{full[0]:.2%} [{full[1]:.2%}, {full[2]:.2%}]",
            "rolled back": f"{rolled[0]:.2%} [{rolled[1]:.2%}, {rolled[2]:.2%}]",
            "stay_first_rate": first_only[0], "full_rate": full[0], "rollback_rate": rolled[0],
            "median treatment results to full": float(np.median(out.treatment_results[done])) if done.any()
            else float("nan"),
            "p95 treatment results to full": float(np.quantile(out.treatment_results[done], 0.95)) if done.any()
            else float("nan"),
            "median treatment results to rollback": float(np.median(out.treatment_results[out.ended == "rollback"]))
            if (out.ended == "rollback").any() else float("nan"),
            "max_per_step": max_per_step,
        })
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for the performance report (``quick``: 20 runs)."""
    rows = scenarios(20 if quick else 2000, 40_000)
    return [{k: v for k, v in r.items() if not isinstance(v, float) or np.isfinite(v)} | {"runs": float(r["runs"])}
            for r in rows]


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The goals, as measured in this run."""
    by = {r["case"]: r for r in rows}
    bad, good = by["error rate 5% -> 6.5% (30% worse)"], by["healthy (A/A)"]
    return [f"- 30% worse error rate never past the first step: {bad['stay_first_rate']:.2%} of runs (goal >= 99%).",
            f"- Healthy challenger reaches full rollout: {good['full_rate']:.2%} of runs (goal >= 95%), median "
            f"{good.get('median treatment results to full', float('nan')):,.0f} treatment results."]


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for r in run(quick):
        print(r)
    print("\n".join(summary(run(quick)) if quick else []))

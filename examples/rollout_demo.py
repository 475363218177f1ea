"""Shadow, ramp, promote; then a broken challenger rolled back at its first step.

In one process on the in-memory store (no network), with stand-in models:

1. **Shadow**: the challenger GNN v2.2.0 runs on every request in the shadow of the champion
   v2.1.0 (``prediction(..., shadow=runner.bind(inputs))``), never serving its answer; the
   shadow report says whether it is ready for an A/B test.
2. **Ramp**: a progressive rollout 1 -> 5 -> 20 -> 50 % widens the treatment share step by
   step while the "no harm" evidence holds, then hands over to the test's promote decision.
3. **Broken challenger**: v2.3.0 fails 30 % of its requests; it is rolled back at its first
   step (1 % of users), the champion never changes.

``python -m examples.rollout_demo`` (``--quick`` for a smaller run, used by the tests).
``examples.demo`` can call :func:`main` with one line.
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable

from mlops_otel import Runtime, Settings
from mlops_otel.ab import ABTestConfig, RolloutCheck, RolloutManager, RolloutSchedule
from mlops_otel.shadow import Difference, Flip, ShadowConfig, ShadowRunner

MODEL_TYPE = "gnn"
Model = Callable[[float], tuple[float, float, float]]


def make_model(shift: float, confidence: float, fail_rate: float, seed: int) -> Model:
    """A stand-in GNN: (anomaly score, confidence, simulated latency in ms) of a sensor reading; fails sometimes."""
    rng = random.Random(seed)

    def predict(x: float) -> tuple[float, float, float]:
        if rng.random() < fail_rate:
            raise RuntimeError("model server returned garbage")
        score = 1.0 / (1.0 + math.exp(-(x + shift + rng.gauss(0.0, 0.05))))
        return score, min(1.0, max(0.0, rng.gauss(confidence, 0.05))), rng.lognormvariate(math.log(20.0), 0.2)

    return predict


def shadow_phase(rt: Runtime, models: dict[str, Model], requests: int, say: Callable[[str], None]) -> bool:
    """Run v2.2.0 in the shadow of the champion; return whether the report says ready."""
    challenger = models["v2.2.0"]

    def shadow_model(x: float) -> dict[str, float]:
        score, conf, _ = challenger(x)
        return {"anomaly_score": score, "confidence": conf}

    cfg = ShadowConfig(model_type=MODEL_TYPE, challenger_version="v2.2.0", min_pairs=min(500, requests // 2),
                       max_error_rate=0.05,
                       comparisons=[Difference("anomaly_score", 0.15), Flip("anomaly_score", 0.5)])
    rng = random.Random(1)
    with ShadowRunner(cfg, shadow_model, telemetry=rt.telemetry) as runner:
        for i in range(requests):
            x = rng.gauss(0.0, 1.5)
            try:
                with rt.prediction(MODEL_TYPE, user_id=f"user-{i}", shadow=runner.bind(x)) as p:
                    score, conf, ms = models[p.version or "v2.1.0"](x)
                    p.observe(anomaly_score=score, confidence=conf, inference_time_ms=ms)
            except RuntimeError:
                pass  # a failed champion request has no answer to compare: nothing is shadowed
        runner.drain(60.0)
        report = runner.report()
    flips = report.comparison("anomaly_score_flip")
    say(f"shadow: {report.completed} pairs completed, {report.dropped} dropped, {report.errors} challenger errors; "
        f"decision flips {flips.rate:.2%} [{flips.lower:.2%}, {flips.upper:.2%}]")
    say(f"shadow report: {report.recommendation}")
    return report.ready


def ramp(rt: Runtime, rollouts: RolloutManager, name: str, models: dict[str, Model], *, batch: int,
         max_requests: int, say: Callable[[str], None]) -> RolloutCheck:
    """Serve traffic through the rollout of test *name*, checking it after every *batch* requests."""
    rng = random.Random(name)
    check = rollouts.check(name)
    for i in range(max_requests):
        x = rng.gauss(0.0, 1.5)
        try:
            with rt.prediction(MODEL_TYPE, user_id=f"{name}-user-{rng.randrange(10**9)}") as p:
                score, conf, ms = models[p.version or "v2.1.0"](x)
                p.observe(anomaly_score=score, confidence=conf, inference_time_ms=ms)
        except RuntimeError:
            pass  # the service answers with an error; prediction() recorded it everywhere
        if (i + 1) % batch:
            continue
        check = rollouts.check(name)
        if check.changed is not None:
            verdict = check.verdict
            n = f" after {verdict.n_treatment} treatment results" if verdict is not None else ""
            say(f"rollout {name}: {check.changed}{n} -> status {check.status.value}, "
                f"treatment share {check.traffic_pct:g}%")
        if check.status.value in ("promoted", "rolled_back"):
            break
    return check


def main(quick: bool = False, say: Callable[[str], None] = print) -> int:
    """Run the three phases; returns 0 when each ended as intended."""
    rt = Runtime.create(Settings(drift={"check_interval": None}), store="memory://")
    try:
        for v in ("v2.1.0", "v2.2.0", "v2.3.0"):
            rt.registry.register(MODEL_TYPE, v)
        rt.registry.promote(MODEL_TYPE, "v2.1.0", reason="initial champion")
        models = {"v2.1.0": make_model(0.0, 0.80, 0.02, 1), "v2.2.0": make_model(0.02, 0.86, 0.02, 2),
                  "v2.3.0": make_model(0.02, 0.86, 0.30, 3)}
        say("1. shadow: v2.2.0 runs next to the champion v2.1.0 on every request, never serving")
        ready = shadow_phase(rt, models, 1000 if quick else 4000, say)

        say("2. ramp: v2.2.0 through 1 -> 5 -> 20 -> 50 %, then the test's promote decision")
        schedule = RolloutSchedule.of((1.0, 5.0, 20.0, 50.0), min_results=150 if quick else 500,
                                      error_rate_margin=0.05, latency_margin_pct=10.0, confidence_margin=0.05)
        rollouts = RolloutManager(rt.ab, telemetry=rt.telemetry)
        def test(name: str, control: str, treatment: str) -> ABTestConfig:
            return ABTestConfig(name=name, model_type=MODEL_TYPE, control_version=control,
                                treatment_version=treatment, min_samples=100, planned_samples=2000)

        rollouts.start(test("gnn-v2.2.0-rollout", "v2.1.0", "v2.2.0"), schedule)
        good = ramp(rt, rollouts, "gnn-v2.2.0-rollout", models, batch=500, max_requests=400_000, say=say)
        say(f"champion of {MODEL_TYPE!r} is now {rt.registry.champion_version(MODEL_TYPE)}")

        say("3. broken challenger: v2.3.0 fails 30 % of its requests")
        rollouts.start(test("gnn-v2.3.0-rollout", "v2.2.0", "v2.3.0"), schedule)
        bad = ramp(rt, rollouts, "gnn-v2.3.0-rollout", models, batch=500, max_requests=200_000, say=say)
        reason = rollouts.get("gnn-v2.3.0-rollout").reason
        say(f"rolled back at step {bad.step + 1} ({schedule.steps[bad.step].traffic_pct:g}% of users): {reason}")
        say(f"champion of {MODEL_TYPE!r} stays {rt.registry.champion_version(MODEL_TYPE)}")
        say("role history:")
        for change in rt.registry.history(MODEL_TYPE):
            say(f"  {change.action:18} {change.version or '-':8} {change.reason}")
        ok = (ready and good.status.value == "promoted" and bad.status.value == "rolled_back" and bad.step == 0
              and rt.registry.champion_version(MODEL_TYPE) == "v2.2.0")
        return 0 if ok else 1
    finally:
        rt.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m examples.rollout_demo")
    parser.add_argument("--quick", action="store_true", help="a smaller run (used by the tests)")
    raise SystemExit(main(parser.parse_args().quick))

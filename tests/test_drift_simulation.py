"""Seeded drift simulations: the acceptance scenarios of docs/drift.md, run through DriftDetector.

Each run sets a 1,000-sample reference drawn from the validation distribution
and streams production traffic in chunks of 100 (one local check per chunk,
as ``check_every=100`` does per sample). ``python -m tests.test_drift_simulation``
prints the figures quoted in docs/drift.md.
"""

from __future__ import annotations

import statistics
import time

import attrs
import numpy as np

from mlops_otel.drift import DriftDetector, DriftLevel
from mlops_otel.registry import ModelRegistry
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry

WINDOW = 1000
CHECK_EVERY = 100
SCORE_MEAN, SCORE_SD = 0.30, 0.08  # anomaly score ~ N(0.30, 0.08) clipped to [0, 1]
CONF_OK, CONF_DEGRADED = (45.0, 5.0), (40.0, 10.0)  # Beta: mean 0.90 (sd 0.042), mean 0.80 (sd 0.056)


def scores(rng: np.random.Generator, n: int, shift_sd: float = 0.0) -> np.ndarray:
    return np.clip(rng.normal(SCORE_MEAN + shift_sd * SCORE_SD, SCORE_SD, n), 0.0, 1.0)


def confidences(rng: np.random.Generator, n: int, beta: tuple[float, float] = CONF_OK) -> np.ndarray:
    return rng.beta(*beta, n)


def detector(seed: int, registry: ModelRegistry | None = None, version: str = "v2.1.0") -> DriftDetector:
    tel = Telemetry()
    store = MemoryStore(telemetry=tel) if registry is None else registry.store
    d = DriftDetector("gnn", version, store=store, telemetry=registry.telemetry if registry else tel,
                      registry=registry, window_size=WINDOW, check_every=CHECK_EVERY)
    rng = np.random.default_rng([seed, 0])
    d.set_reference(anomaly_scores=scores(rng, WINDOW), confidences=confidences(rng, WINDOW))
    return d


def stream(d: DriftDetector, s: np.ndarray, c: np.ndarray) -> list[tuple[bool, DriftLevel, float]]:
    """Feed chunks of CHECK_EVERY samples; the (alert, level, score) of the check after each chunk."""
    checks = []
    for start in range(0, s.shape[0], CHECK_EVERY):
        d.add_production_samples(s[start:start + CHECK_EVERY], c[start:start + CHECK_EVERY])
        report = d.last_report
        assert report is not None
        checks.append((report.alert_triggered, report.level, report.current_drift_score))
    return checks


@attrs.frozen
class Outcome:
    """What one scenario measured."""

    runs: int
    checks: int
    alerts: int
    warnings: int
    passed: int
    detail: dict[str, float]
    seconds: float

    @property
    def pass_rate(self) -> float:
        return self.passed / self.runs


def no_drift(runs: int = 10, samples: int = 20_000) -> Outcome:
    """Production from the reference distribution: how often does a check alert (or warn)?"""
    started = time.perf_counter()
    checks = alerts = warnings = clean_runs = 0
    scores_seen = []
    for seed in range(runs):
        d = detector(seed)
        rng = np.random.default_rng([seed, 1])
        evaluated = [c for c in stream(d, scores(rng, samples), confidences(rng, samples))
                     if c[1] is not DriftLevel.INSUFFICIENT_DATA]
        checks += len(evaluated)
        run_alerts = sum(alert for alert, _, _ in evaluated)
        alerts += run_alerts
        warnings += sum(level is DriftLevel.WARNING for _, level, _ in evaluated)
        clean_runs += run_alerts == 0
        scores_seen += [score for _, _, score in evaluated]
    return Outcome(runs, checks, alerts, warnings, clean_runs,
                   {"max_score": max(scores_seen), "p99_score": float(np.quantile(scores_seen, 0.99))},
                   time.perf_counter() - started)


def mean_shift(shift_sd: float, runs: int = 200, after: int = 1000) -> tuple[Outcome, list[int | None]]:
    """A window of reference traffic, then *after* samples with the score mean shifted by *shift_sd* sd."""
    started = time.perf_counter()
    checks = alerts = warnings = 0
    delays: list[int | None] = []
    final_warning = 0
    no_alert_and_warned = 0
    final_scores = []
    for seed in range(runs):
        d = detector(seed)
        rng = np.random.default_rng([seed, 2])
        before = stream(d, scores(rng, WINDOW), confidences(rng, WINDOW))
        shifted = stream(d, scores(rng, after, shift_sd), confidences(rng, after))
        checks += len(before) + len(shifted)
        run_alerts = sum(a for a, _, _ in before + shifted)
        alerts += run_alerts
        warnings += sum(level is DriftLevel.WARNING for _, level, _ in shifted)
        first = next((i for i, (a, _, _) in enumerate(shifted) if a), None)
        delays.append(None if first is None else (first + 1) * CHECK_EVERY)
        warned = shifted[-1][1] is DriftLevel.WARNING
        final_scores.append(shifted[-1][2])
        final_warning += warned
        no_alert_and_warned += run_alerts == 0 and warned
    detected = [x for x in delays if x is not None]
    detail = {
        "detected_within_1000": sum(x <= 1000 for x in detected) / runs,
        "median_delay": float(statistics.median(detected)) if detected else float("nan"),
        "max_delay": float(max(detected)) if detected else float("nan"),
        "final_warning_rate": final_warning / runs,
        "final_score_mean": float(np.mean(final_scores)),
        "final_score_max": float(np.max(final_scores)),
    }
    return Outcome(runs, checks, alerts, warnings, no_alert_and_warned, detail,
                   time.perf_counter() - started), delays


def confidence_drop(runs: int = 50) -> tuple[Outcome, str]:
    """Confidence falls from mean 0.90 to 0.80 while the anomaly score keeps its distribution."""
    started = time.perf_counter()
    flagged = named = 0
    recommendation = ""
    for seed in range(runs):
        tel = Telemetry()
        registry = ModelRegistry(MemoryStore(telemetry=tel), telemetry=tel)
        registry.register("gnn", "v2.0.0")
        registry.register("gnn", "v2.1.0")
        registry.promote("gnn", "v2.1.0", reason="won the A/B test")
        d = detector(seed, registry)
        rng = np.random.default_rng([seed, 3])
        stream(d, scores(rng, WINDOW), confidences(rng, WINDOW))
        stream(d, scores(rng, WINDOW), confidences(rng, WINDOW, CONF_DEGRADED))
        report = d.get_drift_report()
        flagged += report.performance_drift
        recommendation = report.recommendation
        named += ("mean confidence fell" in recommendation
                  and "roll back to the previous champion v2.0.0" in recommendation)
    return Outcome(runs, runs, 0, 0, min(flagged, named), {"flagged": flagged / runs, "named": named / runs},
                   time.perf_counter() - started), recommendation


# -------------------------------------------------------------------- tests
def test_no_drift_alerts_in_at_most_one_percent_of_checks() -> None:
    outcome = no_drift()
    assert outcome.checks == 10 * (20_000 // CHECK_EVERY - WINDOW // 2 // CHECK_EVERY + 1)
    assert outcome.alerts <= 0.01 * outcome.checks


def test_one_sd_shift_alerts_within_1000_samples_in_95_percent_of_runs() -> None:
    outcome, delays = mean_shift(1.0)
    assert sum(d is not None and d <= 1000 for d in delays) >= 0.95 * outcome.runs


def test_half_sd_shift_warns_without_alerting_in_95_percent_of_runs() -> None:
    outcome, _ = mean_shift(0.5, after=2000)
    assert outcome.passed >= 0.95 * outcome.runs


def test_confidence_drop_is_flagged_and_named() -> None:
    outcome, recommendation = confidence_drop()
    assert outcome.passed == outcome.runs, recommendation


def main() -> None:
    """Print the measured results (quoted in docs/drift.md)."""
    o = no_drift()
    print(f"no drift: {o.runs} runs x 20,000 samples, {o.checks} checks: {o.alerts} alerts "
          f"({o.alerts / o.checks:.2%}), {o.warnings} warnings ({o.warnings / o.checks:.2%}), "
          f"max score {o.detail['max_score']:.3f}, p99 {o.detail['p99_score']:.3f} [{o.seconds:.1f}s]")
    o, _ = mean_shift(1.0)
    print(f"shift 1.0 sd: {o.runs} runs; alert within 1,000 samples in {o.detail['detected_within_1000']:.1%}, "
          f"median delay {o.detail['median_delay']:.0f} samples, max {o.detail['max_delay']:.0f}; score with the "
          f"window fully shifted: mean {o.detail['final_score_mean']:.3f} [{o.seconds:.1f}s]")
    o, _ = mean_shift(0.5, after=2000)
    print(f"shift 0.5 sd: {o.runs} runs x 2,000 shifted samples; runs with an alert: {o.runs - o.passed}; "
          f"warning level at the end: {o.detail['final_warning_rate']:.1%}; warnings among the "
          f"{o.checks} checks: {o.warnings}; final score mean {o.detail['final_score_mean']:.3f}, "
          f"max {o.detail['final_score_max']:.3f} [{o.seconds:.1f}s]")
    o, rec = confidence_drop()
    print(f"confidence 0.90 -> 0.80: {o.runs} runs; flagged {o.detail['flagged']:.0%}, named {o.detail['named']:.0%} "
          f"[{o.seconds:.1f}s]\n  e.g. {rec}")


if __name__ == "__main__":
    main()

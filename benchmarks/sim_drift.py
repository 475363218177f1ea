"""Drift alerting simulations: false alarms by window and serial dependence, detection, delays.

Every scenario streams synthetic traffic through a real :class:`DriftDetector`
(in-memory store, local checks every *check_every* samples) and counts what
its reports decided; rates come with exact Clopper-Pearson 95% intervals.
Data: anomaly score N(0.30, 0.08) clipped to [0, 1], confidence N(0.90, 0.04)
clipped; serially dependent traffic is an AR(1) with coefficient *phi* on
both outputs (the same equipment reporting in bursts), scaled to the same
marginal sd. The reference is the default one (the first *window* production
samples, so it is as dependent as the traffic), except where noted.

"0.1 rule" columns apply the 0.1 release's decision to the same reports: an
alert as soon as the KS distance reaches 0.3, whatever the sample size.

Run: ``python -m benchmarks.sim_drift`` (``--quick``: 40 runs per cell, for a smoke test;
``--write``: also replace the tables in docs/drift.md, as ``make bench`` does; ``--only categorical``
or ``--only outputs``: run and write one of the two generated blocks, 400 runs per categorical cell).
The tables in docs/drift.md are one full run of this module.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import numpy as np
from scipy import signal, stats

from mlops_otel.drift import DriftDetector, DriftLevel
from mlops_otel.stores import MemoryStore
from mlops_otel.telemetry import Telemetry

SCORE_MEAN, SCORE_SD = 0.30, 0.08
CONF_MEAN, CONF_SD = 0.90, 0.04
THRESHOLD = 0.3


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) of unit marginal variance (started from its stationary law)."""
    e = rng.standard_normal(n)
    e[0] /= np.sqrt(1.0 - phi * phi) if phi else 1.0
    x: np.ndarray = signal.lfilter([1.0], [1.0, -phi], e) if phi else e
    return x * np.sqrt(1.0 - phi * phi)


def traffic(rng: np.random.Generator, n: int, phi: float = 0.0,
            shift_sd: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    scores = np.clip(SCORE_MEAN + SCORE_SD * (ar1(rng, n, phi) + shift_sd), 0.0, 1.0)
    confs = np.clip(CONF_MEAN + CONF_SD * ar1(rng, n, phi), 0.0, 1.0)
    return scores, confs


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def rate(k: int, n: int) -> str:
    low, high = clopper_pearson(k, n)
    return f"{k}/{n} = {k / n:.1%} [{low:.1%}, {high:.1%}]"


def check_every(window: int) -> int:
    return max(10, min(100, window // 10)) if window < 1000 else window // 10


def detector(window: int, **options: object) -> DriftDetector:
    tel = Telemetry()
    return DriftDetector("gnn", "v1", store=MemoryStore(telemetry=tel), telemetry=tel, window_size=window,
                         check_every=check_every(window), **options)  # type: ignore[arg-type]


Check = tuple[bool, DriftLevel, float]


def stream(d: DriftDetector, s: np.ndarray, c: np.ndarray) -> list[Check]:
    """Feed chunks of *check_every* samples; (alert, level, score) of the check after each chunk."""
    step = d.check_every or 100
    out: list[Check] = []
    for start in range(0, s.shape[0], step):
        d.add_production_samples(s[start:start + step], c[start:start + step])
        r = d.last_report
        if r is not None and r.level is not DriftLevel.INSUFFICIENT_DATA:
            out.append((r.alert_triggered, r.level, r.current_drift_score))
    return out


@attrs.frozen
class NullCell:
    window: int
    phi: float
    runs: int
    samples: int
    checks: int
    runs_alerted: int
    runs_alerted_01: int
    checks_warned: int
    seconds: float


def no_drift(window: int, phi: float, runs: int) -> NullCell:
    """Stationary traffic: how many runs ever alert (new rule, and the 0.1 rule on the same reports)?"""
    started = time.perf_counter()
    n = max(min(10 * window, 50_000), 5000)
    checks = alerted = alerted01 = warned = 0
    for seed in range(runs):
        rng = np.random.default_rng([seed, window, int(phi * 100)])
        d = detector(window)
        s, c = traffic(rng, window + n, phi)
        d.add_production_samples(s[:window], c[:window])  # the default reference
        d.check()
        out = stream(d, s[window:], c[window:])
        checks += len(out)
        alerted += any(a for a, _, _ in out)
        alerted01 += any(score >= THRESHOLD for _, _, score in out)
        warned += sum(level is DriftLevel.WARNING for _, level, _ in out)
    return NullCell(window, phi, runs, n, checks, alerted, alerted01, warned, time.perf_counter() - started)


@attrs.frozen
class ShiftCell:
    name: str
    runs: int
    passed: int
    delays: list[int | None]
    delays_01: list[int | None]
    seconds: float


def _first(checks: list[Check], hit: Callable[[Check], bool], step: int) -> int | None:
    return next(((i + 1) * step for i, c in enumerate(checks) if hit(c)), None)


def shift(name: str, runs: int, shifted: Callable[[int], np.ndarray | float], after: int,
          passed: Callable[[list[Check], int | None], bool], window: int = 1000) -> ShiftCell:
    """A reference window, one window of stationary traffic, then *after* samples shifted by *shifted*."""
    started = time.perf_counter()
    ok = 0
    delays: list[int | None] = []
    delays01: list[int | None] = []
    for seed in range(runs):
        rng = np.random.default_rng([seed, 7])
        d = detector(window)
        s, c = traffic(rng, 2 * window)
        d.add_production_samples(s[:window], c[:window])
        d.check()
        stream(d, s[window:], c[window:])
        s2, c2 = traffic(rng, after, 0.0, shifted(after))
        out = stream(d, s2, c2)
        step = d.check_every or 100
        first = _first(out, lambda x: x[0], step)
        delays.append(first)
        delays01.append(_first(out, lambda x: x[2] >= THRESHOLD, step))
        ok += passed(out, first)
    return ShiftCell(name, runs, ok, delays, delays01, time.perf_counter() - started)


CATEGORIES = ("pump", "valve", "sensor")
BEFORE, AFTER = (0.5, 0.3, 0.2), (0.4, 0.4, 0.2)
#: The feature family's alpha per check (the detector's default ``feature_alpha``, Holm over five features).
FEATURE_ALPHA = 1e-3
#: Stationary runs: this many windows of traffic after the reference (a check every *check_every* samples).
NULL_WINDOWS = 3


def _feature_batch(rng: np.random.Generator, n: int, p: tuple[float, ...]
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, list[float | str]]]:
    s, c = traffic(rng, n)
    return s, c, {
        "equipment": rng.choice(CATEGORIES, n, p=p).tolist(),
        "site": rng.choice(["north", "south", "east"], n).tolist(),
        "temperature": rng.normal(50.0, 5.0, n).tolist(),
        "pressure": rng.gamma(4.0, 2.0, n).tolist(),
        "firmware": rng.choice(["1.0", "1.1"], n, p=(0.7, 0.3)).tolist(),
    }


@attrs.frozen
class CategoricalCell:
    window: int
    reference: int
    explicit: bool
    runs: int
    named: int  # shifted runs: the feature flagged, ranked first and named
    steady_flags: int  # shifted runs: one of the four steady features flagged too
    null_checks: int
    null_categorical: int  # stationary runs: a categorical feature flagged in any check
    null_features: int  # stationary runs: any feature flagged in any check
    null_alerts: int  # stationary runs: any output alert
    seconds: float


def _categorical_detector(rng: np.random.Generator, window: int, reference: int | None,
                          **options: object) -> DriftDetector:
    """A detector with its reference: the default one (the first *window* samples), or an explicit
    *reference* of that many samples (validation data; numeric features keep the newest *window*)."""
    d = detector(window, **options)
    s, c, f = _feature_batch(rng, reference or window, BEFORE)
    if reference is None:
        d.add_production_samples(s, c, features=f)
    else:
        d.set_reference(anomaly_scores=s, confidences=c, features=f)
    d.check()
    return d


def categorical(runs: int, window: int = 1000, reference: int | None = None, shift: float = 0.10, *,
                stationary: bool = True, **options: object) -> CategoricalCell:
    """A 3-category feature whose mix moves by *shift* (50/30/20 -> 40/40/20 at 0.10) among four steady
    features, one check after a window of shifted traffic; and, on other seeds, the same detector on
    stationary traffic, NULL_WINDOWS windows in chunks of *check_every* (a check after each: 30 per run at
    window 1,000; the first ones still overlap the default reference, the later ones are fresh)."""
    started = time.perf_counter()
    after = (BEFORE[0] - shift, BEFORE[1] + shift, BEFORE[2])
    named = steady = 0
    null_checks = null_cat = null_feat = null_alert = 0
    categorical_names = {"equipment", "site", "firmware"}
    for seed in range(runs):
        rng = np.random.default_rng([seed, 11])
        d = _categorical_detector(rng, window, reference, **options)
        s, c, f = _feature_batch(rng, window, after)
        d.add_production_samples(s, c, features=f)
        report = d.get_drift_report()
        ranked = list(report.features.values())
        named += (ranked[0].name == "equipment" and ranked[0].drifted
                  and "equipment" in report.recommendation)
        steady += any(x.drifted for x in ranked if x.name != "equipment")

        if not stationary:
            continue
        rng = np.random.default_rng([seed, 13])
        d = _categorical_detector(rng, window, reference, **options)
        s, c, f = _feature_batch(rng, NULL_WINDOWS * window, BEFORE)
        step = d.check_every or 100
        cat = feat = alert = False
        for start in range(0, NULL_WINDOWS * window, step):
            d.add_production_samples(s[start:start + step], c[start:start + step],
                                     features={k: v[start:start + step] for k, v in f.items()})
            r = d.last_report
            if r is None or r.level is DriftLevel.INSUFFICIENT_DATA:
                continue
            null_checks += 1
            cat |= any(x.drifted for x in r.features.values() if x.name in categorical_names)
            feat |= any(x.drifted for x in r.features.values())
            alert |= r.alert_triggered
        null_cat += cat
        null_feat += feat
        null_alert += alert
    return CategoricalCell(window, reference or window, reference is not None, runs, named, steady, null_checks,
                           null_cat, null_feat, null_alert, time.perf_counter() - started)


def categorical_shift(runs: int) -> tuple[int, int, int]:
    """The shifted runs alone at window 1,000, default reference: (named, steady flags, runs)."""
    cell = categorical(runs, stationary=False)
    return cell.named, cell.steady_flags, runs


def categorical_power(window: int, reference: int, shift: float = 0.10, alpha: float = FEATURE_ALPHA,
                      features: int = 5) -> float:
    """Asymptotic power of the chi-square test of the mix (df 2) for the scenario's move, at the first
    Holm step (alpha / features), from the noncentral chi-square: lambda = n*m/(n+m) * sum (d^2 / pooled)."""
    p0 = np.asarray(BEFORE)
    p1 = np.asarray((BEFORE[0] - shift, BEFORE[1] + shift, BEFORE[2]))
    pooled = (reference * p0 + window * p1) / (reference + window)
    nc = window * reference / (window + reference) * float(np.sum((p1 - p0) ** 2 / pooled))
    return float(stats.ncx2.sf(stats.chi2.isf(alpha / features, 2), 2, nc))


def minimum_window(reference: int | None = None, goal: float = 0.95) -> int:
    """The smallest window (a multiple of 50) whose asymptotic power reaches *goal*; the reference is the
    default one (as large as the window) unless given."""
    window = 50
    while categorical_power(window, reference or window) < goal:
        window += 50
    return window


#: (window, explicit reference size or None for the default one, feature_alpha, the reference's label).
#: The old rule (0.1 of #17: Holm at alpha 0.01, an explicit reference cut to reference_size) is run on
#: the same seeds; its explicit 10,000-sample reference is simulated by the 1,000 samples it kept.
CATEGORICAL_CELLS: tuple[tuple[int, int | None, float, str], ...] = (
    (1000, None, 0.01, "default (first 1,000), old rule: alpha 0.01"),
    (1000, None, FEATURE_ALPHA, "default (first 1,000)"),
    (1500, None, FEATURE_ALPHA, "default (first 1,500)"),
    (1000, 1000, 0.01, "explicit 10,000 cut to 1,000, old rule: alpha 0.01"),
    (1000, 10_000, FEATURE_ALPHA, "explicit, 10,000 samples"),
)


def run_categorical(runs: int) -> list[str]:
    lines = ["### Input features: a categorical mix shift (five features, Holm at feature_alpha per check)", "",
             "| window | reference | feature_alpha | asymptotic power | mix moves 10 points: flagged, ranked first "
             "and named (goal >= 95%) | steady features flagged in the same runs | stationary: runs with a "
             "categorical flag | stationary: runs with any feature flag | stationary: runs with an alert |",
             "|---:|---|---:|---:|---|---|---|---|---|"]
    for window, reference, alpha, label in CATEGORICAL_CELLS:
        cell = categorical(runs, window, reference, feature_alpha=alpha)
        lines.append(f"| {window:,} | {label} | {alpha:g} | "
                     f"{categorical_power(window, cell.reference, alpha=alpha):.1%} | "
                     f"{rate(cell.named, runs)} | {rate(cell.steady_flags, runs)} | "
                     f"{rate(cell.null_categorical, runs)} | {rate(cell.null_features, runs)} | "
                     f"{rate(cell.null_alerts, runs)} |")
        print(lines[-1], f"[{cell.seconds:.1f}s]", file=sys.stderr, flush=True)
    lines += ["", f"Minimum window for >= 95% asymptotic power on this move at alpha {FEATURE_ALPHA} over five "
              f"features: {minimum_window():,} with the default reference, {minimum_window(10_000):,} with an "
              f"explicit reference of 10,000. Stationary runs: {NULL_WINDOWS} windows after the reference, a check "
              f"every window / 10 samples ({10 * NULL_WINDOWS} checks per run, all counted)."]
    return lines


def _delay(delays: Iterable[int | None]) -> str:
    found = [x for x in delays if x is not None]
    if not found:
        return "never"
    missed = sum(x is None for x in delays)
    return (f"median {statistics.median(found):,.0f} (min {min(found):,}, max {max(found):,})"
            + (f", {missed} never" if missed else ""))


def run(quick: bool = False) -> list[str]:
    runs = 40 if quick else 200
    lines = ["### No drift: runs with any alert (goal <= 2%)", "",
             "| window | AR(1) phi | samples per run | checks | runs alerted | 0.1 rule: runs alerted "
             "| checks warning |",
             "|---:|---:|---:|---:|---|---|---:|"]
    windows = (50, 100, 1000) if quick else (50, 100, 1000, 10_000)
    phis = (0.0, 0.97) if quick else (0.0, 0.5, 0.9, 0.97)
    for window in windows:
        for phi in phis:
            cell = no_drift(window, phi, runs)
            lines.append(f"| {window:,} | {phi} | {cell.samples:,} | {cell.checks:,} | "
                         f"{rate(cell.runs_alerted, cell.runs)} | {rate(cell.runs_alerted_01, cell.runs)} | "
                         f"{cell.checks_warned / max(cell.checks, 1):.2%} |")
            print(lines[-1], f"[{cell.seconds:.1f}s]", file=sys.stderr, flush=True)
    lines += ["", "### Shifts at window 1,000 (iid traffic)", "",
              "| scenario | goal | runs passed | delay to the alert (samples) | 0.1 rule delay |",
              "|---|---|---|---|---|"]
    one = shift("1 sd abrupt", runs, lambda n: 1.0, 1000, lambda out, first: first is not None and first <= 1000)
    half = shift("0.5 sd abrupt", runs, lambda n: 0.5, 2000,
                 lambda out, first: first is None and any(level is DriftLevel.WARNING for _, level, _ in out))
    gradual = shift("0 -> 1 sd linear over 5,000", runs, lambda n: np.minimum(np.arange(n) / 5000, 1.0), 8000,
                    lambda out, first: first is not None)
    for cell, goal in ((one, "alert within 1,000 >= 95%"), (half, "warning, no alert >= 95%"),
                       (gradual, "delay reported")):
        lines.append(f"| {cell.name} | {goal} | {rate(cell.passed, cell.runs)} | {_delay(cell.delays)} | "
                     f"{_delay(cell.delays_01)} |")
        print(lines[-1], f"[{cell.seconds:.1f}s]", file=sys.stderr, flush=True)
    return lines


DOC = Path(__file__).resolve().parent.parent / "docs" / "drift.md"
BLOCKS = {"outputs": ("<!-- sim:begin -->", "<!-- sim:end -->"),
          "categorical": ("<!-- sim-categorical:begin -->", "<!-- sim-categorical:end -->")}


def write(lines: list[str], doc: Path = DOC, block: str = "outputs") -> None:
    """Replace one generated block of docs/drift.md (between its markers) with *lines*."""
    begin, end = BLOCKS[block]
    head, rest = doc.read_text(encoding="utf-8").split(begin, 1)
    tail = rest.split(end, 1)[1]
    doc.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail, encoding="utf-8")


def main(argv: list[str]) -> None:
    """``--only outputs`` / ``--only categorical`` runs (and with ``--write`` rewrites) one block."""
    quick = "--quick" in argv
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    if only is not None and only not in BLOCKS:
        raise SystemExit(f"--only must be one of {sorted(BLOCKS)}, got {only!r}")
    for block in BLOCKS:
        if only not in (None, block):
            continue
        started = time.perf_counter()
        lines = run(quick=quick) if block == "outputs" else run_categorical(40 if quick else 400)
        lines += ["", f"_One run of `python -m benchmarks.sim_drift --only {block}`: "
                  f"{time.perf_counter() - started:.0f} s on {os.cpu_count()} shared cores._"]
        print("\n".join(lines))
        if "--write" in argv and not quick:
            write(lines, block=block)
            print(f"wrote the {block} block of {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

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
``--write``: also replace the tables in docs/drift.md, as ``make bench`` does).
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


def categorical_shift(runs: int, shift: float = 0.10, window: int = 1000) -> tuple[int, int, int]:
    """A 3-category feature whose mix moves by *shift* (50/30/20 -> 40/40/20 at 0.10) among four steady
    features: (runs where it is flagged, ranked first and named in the recommendation; runs where a steady
    feature is flagged; runs)."""
    named = false_flags = 0
    for seed in range(runs):
        rng = np.random.default_rng([seed, 11])
        d = detector(window)

        def batch(n: int, p: tuple[float, ...], rng: np.random.Generator = rng
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, list[float | str]]]:
            s, c = traffic(rng, n)
            return s, c, {
                "equipment": rng.choice(CATEGORIES, n, p=p).tolist(),
                "site": rng.choice(["north", "south", "east"], n).tolist(),
                "temperature": rng.normal(50.0, 5.0, n).tolist(),
                "pressure": rng.gamma(4.0, 2.0, n).tolist(),
                "firmware": rng.choice(["1.0", "1.1"], n, p=(0.7, 0.3)).tolist(),
            }

        s, c, f = batch(window, (0.5, 0.3, 0.2))
        d.add_production_samples(s, c, features=f)
        d.check()
        s, c, f = batch(window, (0.5 - shift, 0.3 + shift, 0.2))
        d.add_production_samples(s, c, features=f)
        report = d.get_drift_report()
        ranked = list(report.features.values())
        named += (ranked[0].name == "equipment" and ranked[0].drifted
                  and "equipment" in report.recommendation)
        false_flags += any(x.drifted for x in ranked if x.name != "equipment")
    return named, false_flags, runs


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
    named, false_flags, n = categorical_shift(runs)
    lines += ["", "### Input features (window 1,000, five features)", "",
              "| scenario | goal | result |", "|---|---|---|",
              f"| one categorical feature's mix moves 10 points (50/30/20 -> 40/40/20) | flagged, ranked first "
              f"and named >= 95% | {rate(named, n)} |",
              f"| the four steady features in the same runs | (false flags) | {rate(false_flags, n)} runs with one |"]
    print("\n".join(lines[-2:]), file=sys.stderr, flush=True)
    return lines


DOC = Path(__file__).resolve().parent.parent / "docs" / "drift.md"
_BEGIN, _END = "<!-- sim:begin -->", "<!-- sim:end -->"


def write(lines: list[str], doc: Path = DOC) -> None:
    """Replace the simulation tables of docs/drift.md (between the sim markers) with *lines*."""
    head, rest = doc.read_text(encoding="utf-8").split(_BEGIN, 1)
    tail = rest.split(_END, 1)[1]
    doc.write_text(head + _BEGIN + "\n" + "\n".join(lines) + "\n" + _END + tail, encoding="utf-8")


def main(argv: list[str]) -> None:
    started = time.perf_counter()
    lines = run(quick="--quick" in argv)
    lines += ["", f"_One run of `python -m benchmarks.sim_drift`: {time.perf_counter() - started:.0f} s "
              f"on {os.cpu_count()} shared cores._"]
    print("\n".join(lines))
    if "--write" in argv and "--quick" not in argv:
        write(lines)
        print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

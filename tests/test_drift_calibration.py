"""Calibrated drift decisions: exact KS p-values, effective sample sizes, and small seeded simulations.

The simulations are the small versions of benchmarks/sim_drift.py (whose full
run gives the tables of docs/drift.md): few runs, fixed seeds, bounds chosen
so that each test fails on the 0.1 rule (KS >= 0.3 alone).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from benchmarks.sim_drift import ar1, categorical, categorical_power, minimum_window, no_drift, shift
from mlops_otel.drift import DriftLevel, _features
from mlops_otel.drift._calibration import (
    autocorrelation_time,
    effective_size,
    ks_calibrated,
    ks_pvalue_exact,
)
from mlops_otel.drift._stats import ks_pvalue


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(0.0, 2.0), st.integers(0, 2**32 - 1))
def test_exact_pvalue_is_scipys_exact_two_sample_distribution(n: int, m: int, shift_: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y = rng.normal(0.0, 1.0, n), rng.normal(shift_, 1.0, m)
    expected = stats.ks_2samp(x, y, method="exact")
    assert ks_pvalue_exact(float(expected.statistic), n, m) == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-9)


def test_exact_pvalue_corrects_the_asymptotic_one_at_small_sizes() -> None:
    # n = m = 20, D = 0.4: the asymptotic p-value is ~0.7x the exact one (anti-conservative).
    exact, asymp = ks_pvalue_exact(0.4, 20, 20), ks_pvalue(0.4, 20, 20)
    assert asymp < 0.8 * exact
    assert ks_calibrated(0.4, 20, 20).method == "exact"
    assert ks_calibrated(0.4, 20, 20).p_value == exact
    assert ks_calibrated(0.1, 1000, 1000).method == "asymptotic"


def test_exact_pvalue_edges() -> None:
    assert ks_pvalue_exact(0.0, 5, 7) == 1.0
    assert ks_pvalue_exact(1.0, 3, 3) == pytest.approx(0.1)  # 2 / C(6, 3)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        ks_pvalue_exact(0.5, 0, 3)


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9, 0.97])
def test_effective_size_tracks_the_autocorrelation(phi: float) -> None:
    rng = np.random.default_rng(4)
    taus = [autocorrelation_time(ar1(rng, 2000, phi)) for _ in range(20)]
    true_tau = (1 + phi) / (1 - phi)
    # An upper bound by design: at or above the truth in most windows, never wildly above.
    assert np.mean(np.asarray(taus) >= 0.8 * true_tau) >= 0.9
    assert np.median(taus) <= 2.5 * true_tau + 0.5


def test_effective_size_of_degenerate_series() -> None:
    assert effective_size(np.full(100, 0.4)) == 100
    assert effective_size(np.empty(0)) == 0.0
    assert effective_size(np.linspace(0, 1, 1000)) < 5  # sorted arrivals: almost one sample's worth


# ------------------------------------------------------------- simulations
def test_serially_dependent_traffic_does_not_alert_where_the_01_rule_does() -> None:
    cell = no_drift(1000, 0.97, runs=30)
    assert cell.runs_alerted == 0
    assert cell.runs_alerted_01 >= 15  # 0.1 alerted in most of the same runs (85% in the full simulation)


def test_small_windows_do_not_alert_on_stationary_traffic() -> None:
    cell = no_drift(50, 0.0, runs=30)
    assert cell.runs_alerted <= 1
    assert cell.runs_alerted_01 >= 20  # KS >= 0.3 is crossed by chance at n = 50


def test_one_sd_shift_still_alerts_within_a_window() -> None:
    cell = shift("1 sd", 30, lambda n: 1.0, 1000, lambda out, first: first is not None and first <= 1000)
    assert cell.passed >= 29


def test_half_sd_shift_warns_without_alerting() -> None:
    cell = shift("0.5 sd", 30, lambda n: 0.5, 2000,
                 lambda out, first: first is None and any(level is DriftLevel.WARNING for _, level, _ in out))
    assert cell.passed >= 29


def test_a_categorical_mix_shift_of_ten_points_is_flagged_and_named_from_the_minimum_window() -> None:
    # The documented minimum window with the default reference is 1,300 (asymptotic power >= 95% at
    # feature_alpha 1e-3 over five features); at 1,500 it is 98%.
    assert minimum_window() == 1300
    cell = categorical(40, 1500, stationary=False)
    assert cell.named >= 38
    assert cell.steady_flags <= 1


def _old_categorical_rule(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Before #17's follow-up: an explicit categorical reference cut to reference_size, Holm at alpha 0.01."""
    monkeypatch.setattr(_features, "CATEGORICAL_REFERENCE_FACTOR", 1)
    return {"feature_alpha": 0.01}


@pytest.mark.parametrize("rule", ["new", "old"])
def test_a_large_categorical_reference_buys_the_power_and_the_stricter_alpha_keeps_runs_quiet(
        rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Window 700 against a 7,000-sample validation reference, a 10-point mix move among five features,
    # 40 seeded runs; and 40 stationary runs of 3 windows (30 checks each) on the same detector setup.
    # New rule: the full 7,000 reference counts, Holm at 1e-3: asymptotic power 95% (38/40 seen).
    # Old rule: the reference cut to 700, Holm at 0.01: power 78% (31/40 seen), so it fails the bound.
    assert categorical_power(700, 7000) >= 0.94
    options = _old_categorical_rule(monkeypatch) if rule == "old" else {}
    cell = categorical(40, 700, 7000, **options)
    passed = cell.named >= 36 and cell.null_categorical <= 1 and cell.null_alerts == 0
    assert passed is (rule == "new"), cell

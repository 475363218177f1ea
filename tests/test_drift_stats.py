"""Pure drift statistics: KS (against scipy), its p-value, PSI and the confidence interval."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mlops_otel.drift import (
    KSResult,
    KSWorkspace,
    ReferenceSample,
    confidence_degradation,
    ks_2samp,
    ks_2samp_sorted,
    ks_pvalue,
    psi,
)

from .strategies import ks_continuous, ks_lattice, ks_pairs, ks_samples


def scipy_asymp(a: object, b: object) -> stats._stats_py.KstestResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns for n1 = n2 = 1 (p-value NaN)
        return stats.ks_2samp(a, b, method="asymp")


def same(x: KSResult, y: KSResult) -> bool:
    """Equal results (NaN p-values, for two one-value samples, compare equal)."""
    return x.statistic == y.statistic and (x.pvalue == y.pvalue or (math.isnan(x.pvalue) and math.isnan(y.pvalue)))


def assert_pvalue_close(ours: float, theirs: float) -> None:
    if math.isnan(theirs):
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(theirs, abs=1e-6)


# ------------------------------------------------------------ KS properties
@settings(max_examples=300, deadline=None)
@given(ks_pairs)
def test_ks_matches_scipy(pair: tuple[list[float], list[float]]) -> None:
    a, b = pair
    ours = ks_2samp(a, b)
    theirs = scipy_asymp(a, b)
    assert ours.statistic == pytest.approx(float(theirs.statistic), abs=1e-12, rel=0)
    assert_pvalue_close(ours.pvalue, float(theirs.pvalue))


@settings(max_examples=150, deadline=None)
@given(ks_pairs)
def test_presorted_reference_gives_the_same_result(pair: tuple[list[float], list[float]]) -> None:
    a, b = pair
    reference = ReferenceSample.from_values(a)
    assert same(ks_2samp_sorted(np.sort(a), b), ks_2samp(a, b))
    assert same(reference.ks(b), ks_2samp(a, b))


@settings(max_examples=150, deadline=None)
@given(ks_samples)
def test_identical_samples_give_zero(a: list[float]) -> None:
    result = ks_2samp(a, list(a))
    assert result.statistic == 0.0
    if len(a) > 1:
        assert result.pvalue == 1.0


@settings(max_examples=150, deadline=None)
@given(ks_pairs)
def test_symmetric(pair: tuple[list[float], list[float]]) -> None:
    a, b = pair
    assert same(ks_2samp(a, b), ks_2samp(b, a))


@settings(max_examples=150, deadline=None)
@given(st.tuples(ks_lattice, ks_lattice), st.sampled_from(["cube", "exp", "affine", "reflect"]))
def test_invariant_to_a_monotone_transform_of_both(pair: tuple[list[float], list[float]], name: str) -> None:
    # Lattice values k/8 with |k| <= 40 stay distinct under each transform, so ranks are preserved.
    transforms: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "cube": lambda x: x**3 + x, "exp": np.exp, "affine": lambda x: 3.0 * x + 7.0,
        "reflect": lambda x: 7.0 - 3.0 * x,
    }
    a, b = np.asarray(pair[0]), np.asarray(pair[1])
    f = transforms[name]
    before, after = ks_2samp(a, b).statistic, ks_2samp(f(a), f(b)).statistic
    if name == "reflect":
        # Decreasing: the same sup, reached from the other side of a step (1 - 2/3 vs 1/3 in floats).
        assert after == pytest.approx(before, abs=1e-12)
    else:
        assert after == before


@settings(max_examples=60, deadline=None)
@given(ks_continuous, ks_continuous, ks_continuous)
def test_workspace_is_reusable_across_sizes(a: list[float], b: list[float], c: list[float]) -> None:
    workspace = KSWorkspace()
    ref = ReferenceSample.from_values(a)
    for sample in (b, c, b):
        assert ref.ks_statistic(np.sort(sample), workspace) == ks_2samp(a, sample).statistic


def test_ks_matches_scipy_on_large_drifting_samples() -> None:
    rng = np.random.default_rng(7)
    for n1, n2, shift in [(1000, 1000, 0.0), (5000, 5000, 0.05), (5000, 3000, 0.3), (20_000, 50_000, 0.02),
                          (1000, 1000, 2.0), (400, 100_000, 0.1)]:
        a, b = rng.normal(size=n1), rng.normal(shift, 1.0, size=n2)
        theirs = scipy_asymp(a, b)
        ours = ks_2samp(a, b)
        assert ours.statistic == float(theirs.statistic)
        assert_pvalue_close(ours.pvalue, float(theirs.pvalue))


# ----------------------------------------------------------------- p-value
def _kstwo_grid() -> list[tuple[int, float]]:
    grid = []
    for n in (1, 2, 5, 50, 140, 141, 500, 2500, 25_000, 100_001, 400_000):
        for t in (0.3, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 25.0):  # multiples of sqrt(1/n): every regime
            grid.append((n, min(1.0, t / math.sqrt(n))))
        grid += [(n, 0.5), (n, 0.75), (n, 1.0 / n), (n, 0.99)]
    return grid


@pytest.mark.parametrize(("n", "x"), _kstwo_grid())
def test_pvalue_is_scipys_kolmogorov_distribution(n: int, x: float) -> None:
    # ks_pvalue(D, n, n) uses the effective size round(n*n/(2n)); pass (2n, 2n) to get exactly n.
    assert ks_pvalue(x, 2 * n, 2 * n) == pytest.approx(float(stats.kstwo.sf(x, n)), abs=1e-6)


def test_pvalue_edges() -> None:
    assert math.isnan(ks_pvalue(1.0, 1, 1))  # round(1*1/2) = 0: scipy gives NaN too
    assert math.isnan(ks_pvalue(math.nan, 100, 100))
    assert ks_pvalue(0.0, 100, 100) == 1.0
    assert ks_pvalue(1.0, 100, 100) == 0.0
    with pytest.raises(ValueError, match=r"sample sizes must be >= 1, got n1=0 and n2=5"):
        ks_pvalue(0.1, 0, 5)


def test_nan_propagates_and_empty_raises() -> None:
    assert all(math.isnan(v) for v in (ks_2samp([1.0, math.nan], [2.0]).statistic,
                                       ks_2samp([1.0], [math.nan, 2.0]).pvalue))
    with pytest.raises(ValueError, match=r"must not be empty, got sizes 0 and 2"):
        ks_2samp([], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"data1 must be one-dimensional, got shape \(2, 2\)"):
        ks_2samp([[1.0, 2.0], [3.0, 4.0]], [1.0])  # type: ignore[list-item]  # the wrong shape on purpose


# --------------------------------------------------------------------- PSI
def test_psi_is_zero_for_the_reference_itself_and_grows_with_shift() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(size=5000)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    same = psi(ref, rng.normal(size=5000))
    small = psi(ref, rng.normal(0.25, 1.0, size=5000))
    large = psi(ref, rng.normal(1.0, 1.0, size=5000))
    assert same < 0.02 < small < 0.1 < 0.25 < large


def test_psi_matches_the_formula_over_reference_deciles() -> None:
    ref = np.arange(1000) / 1000.0
    sample = np.concatenate([np.full(500, 0.05), np.full(500, 0.95)])
    # Deciles put 100 reference values in each bin; the sample fills bins 0 and 9 with half each.
    expected_fractions = np.full(10, 0.1)
    actual = np.full(10, 1e-4)
    actual[0] = actual[9] = 0.5
    expected = float(np.sum((actual - expected_fractions) * np.log(actual / expected_fractions)))
    assert psi(ref, sample) == pytest.approx(expected, rel=1e-12)


def test_psi_isolates_a_point_mass_in_the_reference() -> None:
    # 40% of the confidences are exactly 1.0: the duplicate deciles merge into one edge.
    ref = np.concatenate([np.linspace(0.5, 0.99, 600), np.ones(400)])
    reference = ReferenceSample.from_values(ref)
    assert reference.psi_edges.shape[0] < 9
    assert reference.psi(ref) == pytest.approx(0.0, abs=1e-12)
    assert reference.psi(np.linspace(0.5, 0.99, 1000)) > 1.0  # the mass at 1.0 vanished


def test_psi_and_reference_validation() -> None:
    with pytest.raises(ValueError, match=r"bins must be an int >= 2, got 1"):
        psi([0.1, 0.2], [0.1], bins=1)
    with pytest.raises(ValueError, match=r"reference must hold at least one value, got 0"):
        ReferenceSample.from_values([])
    with pytest.raises(ValueError, match=r"reference values must be finite"):
        ReferenceSample.from_values([0.1, math.inf])
    with pytest.raises(ValueError, match=r"sample must hold at least one value, got 0"):
        ReferenceSample.from_values([0.1, 0.2]).psi([])


# --------------------------------------------------- confidence degradation
@pytest.mark.parametrize("seed", range(5))
def test_degradation_interval_is_welchs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.beta(45, 5, size=int(rng.integers(30, 3000)))
    sample = rng.beta(40, 10, size=int(rng.integers(30, 3000)))
    ours = confidence_degradation(ref, sample, level=0.9)
    welch = stats.ttest_ind(ref, sample, equal_var=False).confidence_interval(confidence_level=0.9)
    assert ours.estimate == pytest.approx(ref.mean() - sample.mean(), rel=1e-12)
    assert (ours.low, ours.high) == pytest.approx((welch.low, welch.high), rel=1e-9)
    assert ours.level == 0.9


def test_degradation_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(11)
    refs = rng.beta(45, 5, size=(400, 200))
    samples = rng.beta(40, 10, size=(400, 200))
    true_drop = 45 / 50 - 40 / 50
    covered = 0
    for ref, sample in zip(refs, samples, strict=True):
        ci = confidence_degradation(ref, sample)
        covered += ci.low <= true_drop <= ci.high
    assert 0.92 <= covered / 400 <= 0.98


def test_degradation_edges() -> None:
    ci = confidence_degradation([0.9, 0.9, 0.9], [0.8, 0.8])
    assert (ci.estimate, ci.low, ci.high) == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match=r"level must be strictly between 0 and 1, got 1.0"):
        confidence_degradation([0.9, 0.8], [0.8], level=1.0)

"""Evaluation: decisions, symmetry, the dict-like result, the vectorised path, the statistics."""

from __future__ import annotations

import json
import math

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from mlops_otel.ab import ABTestConfig, Decision, Evaluation, Guardrails, StatsBatch, evaluate, evaluate_batch
from mlops_otel.ab._stats import confidence_sequence, optimal_mixture_ratio, srm_p_value
from mlops_otel.registry import Moments, SufficientStats

from .strategies import arm_summaries, traffic_buckets


def config(pct: float = 50.0, **kw: object) -> ABTestConfig:
    return ABTestConfig(name="t", model_type="gnn", control_version="v1", treatment_version="v2",
                        treatment_traffic_pct=pct, **kw)  # type: ignore[arg-type]


def arm(n: int, *, error_rate: float = 0.05, latency: tuple[float, float] = (50.0, 10.0),
        confidence: tuple[float, float] = (0.8, 0.1)) -> SufficientStats:
    """Statistics of n results with exactly these rates, means and standard deviations."""

    def moments(mean: float, sd: float, shift: float) -> Moments:
        d = mean - shift
        return Moments(n, n * d, n * d * d + (n - 1) * sd * sd, shift)

    return SufficientStats(n, round(n * error_rate), moments(*latency, 0.0), moments(*confidence, 0.5))


LOOSE = {"max_error_rate_increase": 0.02}  # a margin 5,000 results per arm can show


def test_seed_style_access() -> None:
    result = evaluate(arm(5000), arm(5000, confidence=(0.81, 0.1)), config(guardrails=LOOSE))
    assert result["decision"] == "promote"
    assert result["decision"] is Decision.PROMOTE
    assert result["n_control"] == 5000
    assert result["n_treatment"] == 5000
    assert "Promote v2" in result["recommendation"]
    assert set(result.keys()) >= {"decision", "recommendation", "n_control", "n_treatment", "effects"}
    assert result["effects"]["confidence"].verdict == "better"
    with pytest.raises(KeyError):
        result["nope"]
    data = json.loads(json.dumps(result.to_dict()))
    assert data["decision"] == "promote"
    assert data["effects"]["confidence"]["lower"] > 0


def test_too_few_results_continue() -> None:
    result = evaluate(arm(999), arm(999, error_rate=0.5), config())
    assert result.decision is Decision.CONTINUE
    assert "need 1000 each" in result.reasons[0]


def test_sample_ratio_mismatch_halts() -> None:
    # 52/48 over 20,000 users on a 50/50 test: chi-square p = 1.5e-8, the sequential test's 1.1e-6.
    result = evaluate(arm(10_400), arm(9_600), config())
    assert result.decision is Decision.HALT
    assert 1e-7 < result.srm_p_value < 1e-5
    assert "sample ratio mismatch" in result.reasons[0]
    # The same counts are fine for a 52/48 split.
    assert evaluate(arm(9_600), arm(10_400), config(52.0)).decision is not Decision.HALT


def test_srm_uses_the_configured_split() -> None:
    # 10 % traffic: 1,000 of 10,000 is exact, 1,150 is a 5-sigma excess.
    assert evaluate(arm(9_000), arm(1_000), config(10.0)).decision is Decision.CONTINUE
    assert evaluate(arm(8_850), arm(1_150), config(10.0)).decision is Decision.HALT


def test_error_rate_increase_rolls_back() -> None:
    result = evaluate(arm(5000), arm(5000, error_rate=0.08), config())
    assert result.decision is Decision.ROLLBACK
    effect = result.effect("error_rate")
    assert effect.verdict == "worse"
    assert effect.estimate == pytest.approx(0.03)
    assert 0 < effect.lower < 0.03 < effect.upper
    assert "error_rate" in result.recommendation


def test_error_guardrail_tolerance() -> None:
    c, t = arm(50_000), arm(50_000, error_rate=0.065)  # +1.5 points against the default 0.5
    assert evaluate(c, t, config()).decision is Decision.ROLLBACK
    tolerant = config(guardrails=Guardrails(max_error_rate_increase=0.02))
    assert evaluate(c, t, tolerant).decision is Decision.CONTINUE


def test_latency_guardrail_is_relative() -> None:
    c = arm(50_000)
    slower = arm(50_000, latency=(52.5, 10.0))  # +5 %: inside the default 10 % tolerance
    assert evaluate(c, slower, config()).effect("latency_ms").verdict == "inconclusive"
    much_slower = arm(50_000, latency=(60.0, 10.0))  # +20 %
    result = evaluate(c, much_slower, config())
    assert result.decision is Decision.ROLLBACK
    assert result.effect("latency_ms").estimate == pytest.approx(0.2)
    strict = config(guardrails={"max_latency_increase_pct": 0.0})
    assert evaluate(c, slower, strict).decision is Decision.ROLLBACK


def test_guardrail_beats_improvement() -> None:
    t = arm(20_000, confidence=(0.85, 0.1), error_rate=0.10)
    result = evaluate(arm(20_000), t, config())
    assert result.decision is Decision.ROLLBACK
    assert result.effect("confidence").verdict == "better"


def test_faster_model_is_promoted_when_latency_is_primary() -> None:
    faster = arm(20_000, latency=(40.0, 10.0))
    assert evaluate(arm(20_000), faster, config()).decision is Decision.CONTINUE  # confidence is primary
    result = evaluate(arm(20_000), faster, config(primary_metric="latency_ms", guardrails=LOOSE))
    assert result.decision is Decision.PROMOTE
    assert result.effect("latency_ms").role == "primary"


def test_better_primary_with_a_breached_guardrail_is_never_promoted() -> None:
    # Confidence clearly better, errors 5 % -> 6 % (margin 0.5 points): shown beyond the margin.
    result = evaluate(arm(50_000), arm(50_000, confidence=(0.82, 0.1), error_rate=0.06), config())
    assert result.decision is Decision.ROLLBACK
    assert result.effect("confidence").verdict == "better"
    assert result.effect("error_rate").verdict == "worse"
    # Errors 5 % -> 5.4 %: neither shown beyond nor within the margin: keep collecting, never promote.
    undecided = evaluate(arm(20_000), arm(20_000, confidence=(0.82, 0.1), error_rate=0.054), config())
    assert undecided.decision is Decision.CONTINUE
    assert "not yet shown within its margin" in undecided.recommendation


def test_promotion_needs_every_guardrail_within_its_margin() -> None:
    c, t = arm(60_000), arm(60_000, confidence=(0.81, 0.1))
    result = evaluate(c, t, config())
    assert result.decision is Decision.PROMOTE, result.recommendation
    assert all(e.non_inferior for e in result.effects if e.role == "guardrail")
    assert evaluate(c, t, config(guardrails={"max_error_rate_increase": 0.001})).decision is Decision.CONTINUE


def test_rare_events_cannot_decide_a_proportion() -> None:
    cfg = config(1.0, primary_metric="error_rate", min_samples=100)
    # 10 of 100 treatment errors against 0 of 9,900 control ones: significant by the normal approximation,
    # but the control arm has 0 events observed and 9.9 expected at the pooled rate (fewer than 10).
    c, t = SufficientStats(9900, 0), SufficientStats(100, 10)
    assert evaluate(c, t, cfg).effect("error_rate").verdict == "inconclusive"
    assert evaluate(c, t, attrs.evolve(cfg, min_events=1)).effect("error_rate").verdict == "worse"
    # Events observed in flood count even where the pooled rate expects few: 14 treatment errors decide.
    assert evaluate(c, SufficientStats(100, 14), cfg).effect("error_rate").verdict == "worse"


def test_ended_test_resolves() -> None:
    same = evaluate(arm(5000), arm(5000), config(), ended=True)
    assert same.decision is Decision.ROLLBACK
    assert "reached its planned duration" in same.recommendation
    few = evaluate(arm(10), arm(10), config(), ended=True)
    assert few.decision is Decision.ROLLBACK
    assert evaluate(arm(5000), arm(5000, confidence=(0.81, 0.1)), config(guardrails=LOOSE),
                    ended=True).decision == "promote"


def test_missing_measurements_mean_no_data() -> None:
    c = SufficientStats(2000, 100)  # errors only, no latency or confidence reported
    result = evaluate(c, SufficientStats(2000, 100), config())
    assert result.effect("latency_ms").verdict == "no data"
    assert math.isnan(result.effect("confidence").estimate)
    assert result.decision is Decision.CONTINUE
    json.dumps(result.to_dict())


def test_constant_values_do_not_crash() -> None:
    c = SufficientStats.of([5.0] * 3000, [0.9] * 3000)
    t = SufficientStats.of([5.0] * 3000, [0.95] * 3000)
    result = evaluate(c, t, config())
    assert result.effect("confidence").verdict == "better"
    assert result.effect("latency_ms").verdict == "inconclusive"


MIRROR = {"better": "worse", "worse": "better", "inconclusive": "inconclusive", "no data": "no data"}


@settings(max_examples=300, deadline=None)  # timing under a loaded CI machine is not the property
@given(arm_summaries(), arm_summaries(), traffic_buckets, st.integers(min_value=2, max_value=3000))
def test_swapping_variants_mirrors_the_evaluation(c: SufficientStats, t: SufficientStats, k: int, ms: int) -> None:
    zero = Guardrails(max_error_rate_increase=0.0, max_latency_increase_pct=0.0, max_confidence_decrease=0.0)
    cfg = config(k / 10_000, guardrails=zero, min_samples=ms)
    swapped_cfg = config((1_000_000 - k) / 10_000, guardrails=zero, min_samples=ms)
    a, b = evaluate(c, t, cfg), evaluate(t, c, swapped_cfg)
    assert (a.n_control, a.n_treatment) == (b.n_treatment, b.n_control)
    assert a.srm_p_value == pytest.approx(b.srm_p_value, rel=1e-9)
    for ea, eb in zip(a.effects, b.effects, strict=True):
        assert MIRROR[ea.verdict] == eb.verdict
        assert ea.p_value == pytest.approx(eb.p_value, rel=1e-9, nan_ok=True)
        if ea.metric != "latency_ms" and not math.isnan(ea.estimate):
            assert ea.estimate == pytest.approx(-eb.estimate, rel=1e-9, abs=1e-12)
            assert (ea.lower, ea.upper) == pytest.approx((-eb.upper, -eb.lower), rel=1e-9, abs=1e-12)
    if a.decision == "halt":
        assert b.decision == "halt"
    elif a.decision == "promote":  # better primary mirrors to a worse one
        assert b.decision == "rollback"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(arm_summaries(), arm_summaries()), min_size=1, max_size=8), st.booleans())
def test_batch_path_agrees_with_scalar_path(pairs: list[tuple[SufficientStats, SufficientStats]],
                                            ended: bool) -> None:
    cfg = config(50.0, min_samples=100)
    batch = evaluate_batch(StatsBatch.from_stats([c for c, _ in pairs]),
                           StatsBatch.from_stats([t for _, t in pairs]), cfg, ended=ended)
    assert list(batch) == [evaluate(c, t, cfg, ended=ended).decision.value for c, t in pairs]


def test_evaluation_is_a_read_only_mapping() -> None:
    result = evaluate(arm(10), arm(10), config())
    assert isinstance(result, Evaluation)
    assert dict(result)["test"] == "t"
    assert len(result) == len(list(result))


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05 / 3, 0.05, 0.1])
def test_mixture_ratio_is_near_optimal(alpha: float) -> None:
    def width(r: float) -> float:
        return float(np.sqrt((1 + r) / r * np.log((1 + r) / alpha**2)))

    best = optimize.minimize_scalar(width, bounds=(0.01, 1e4), method="bounded")
    assert width(optimal_mixture_ratio(alpha)) <= best.fun * 1.0001


def test_confidence_sequence_is_tightest_at_the_plan() -> None:
    n = np.array([500.0, 1000.0, 2000.0, 4000.0])
    se = 1 / np.sqrt(n)  # unit-variance data
    lo, hi, _ = confidence_sequence(np.zeros(4), se, n, 1000.0, 0.05)
    ratio = (hi - lo) / (2 * 1.96 * se)  # width relative to the fixed-horizon interval
    assert ratio.argmin() == 1
    assert 1.4 < ratio.min() < 1.6


def test_always_valid_p_value_crosses_alpha_at_the_boundary() -> None:
    lo, hi, p = confidence_sequence(np.array([0.0]), np.array([1.0]), np.array([100.0]), 100.0, 0.05)
    _, _, at_edge = confidence_sequence(hi, np.array([1.0]), np.array([100.0]), 100.0, 0.05)
    assert p[0] == 1.0
    assert at_edge[0] == pytest.approx(0.05)
    assert lo[0] == -hi[0]


@pytest.mark.parametrize(("n_c", "n_t", "p"), [(10_400, 9_600, 0.5), (8_850, 1_150, 0.1), (37, 3, 0.2)])
def test_srm_p_value_is_the_beta_binomial_bayes_factor(n_c: int, n_t: int, p: float) -> None:
    from scipy import stats

    k = 1000.0
    bf = stats.betabinom.pmf(n_t, n_c + n_t, k * p, k * (1 - p)) / stats.binom.pmf(n_t, n_c + n_t, p)
    assert srm_p_value(n_c, n_t, p) == pytest.approx(min(1.0, 1.0 / bf), rel=1e-6)
    assert float(srm_p_value(0, 0, 0.5)) == 1.0

"""Anytime-valid two-sample statistics, vectorised with numpy (pure).

Every function takes scalars or numpy arrays and broadcasts.

Confidence sequences. For an effect estimate ``d`` with standard error
``se`` the normal-mixture (mixture SPRT) likelihood ratio against ``H0:
effect = e`` is (Robbins 1970; Johari, Koomen, Pekelis & Walsh 2022,
"Always valid inference"; Howard, Ramdas, McAuliffe & Sekhon 2021)::

    Lambda = (1 + r) ** -0.5 * exp(r / (1 + r) * z**2 / 2),  z = (d - e) / se

with ``r = tau**2 / se**2`` the ratio of the mixing variance to the
estimator's variance. ``Lambda`` is a nonnegative martingale under ``H0``, so
by Ville's inequality ``P(Lambda ever >= 1/alpha) <= alpha``: the set of
``e`` with ``Lambda < 1/alpha``::

    d +- se * sqrt((1 + r) / r * log((1 + r) / alpha**2))

covers the true effect at *every* sample size simultaneously with
probability ``1 - alpha``. Looking after every batch cannot inflate the error.

The mixing variance is tuned so the sequence is tightest at a planned
effective sample size ``n_plan`` (Howard et al. 2021): ``r =
r_opt(alpha) * n_eff / n_plan`` with ``r_opt = -2 log(alpha) + log(1 - 2
log(alpha))`` and ``n_eff = n_c n_t / (n_c + n_t)`` (the information grows in
proportion to it). The guarantee holds for any ``n_plan``; it only moves
where the sequence is narrowest. Plugging in estimated variances makes the
guarantee asymptotic (Waudby-Smith et al. 2021, "Time-uniform central limit
theory"), which is why decisions wait for a minimum sample size.
"""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from scipy import special

__all__ = [
    "confidence_sequence",
    "effective_n",
    "log_ratio_of_means",
    "optimal_mixture_ratio",
    "pooled_proportion_difference",
    "proportion_difference",
    "srm_log_bayes_factor",
    "srm_p_value",
    "welch_difference",
]

Array: TypeAlias = npt.NDArray[np.float64]
ArrayLike: TypeAlias = npt.ArrayLike


def _f(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def optimal_mixture_ratio(alpha: float) -> float:
    """``r`` (nearly) minimising the width of the level-*alpha* normal-mixture sequence (Howard et al. 2021).

    Within 0.01 % of the numerical optimum of the width for alpha between 0.001 and 0.1.
    """
    two_log = -2.0 * float(np.log(alpha))
    return two_log + float(np.log1p(two_log))


def effective_n(n_control: ArrayLike, n_treatment: ArrayLike) -> Array:
    """``n_c n_t / (n_c + n_t)``: the sample size of a one-sample problem with the same information."""
    nc, nt = _f(n_control), _f(n_treatment)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nc + nt > 0, nc * nt / (nc + nt), 0.0)


def confidence_sequence(
    estimate: ArrayLike, se: ArrayLike, n_eff: ArrayLike, planned_n_eff: float, alpha: float
) -> tuple[Array, Array, Array]:
    """Return ``(lower, upper, p_value)`` of the always-valid sequence for the effect.

    ``p_value`` is the anytime-valid p-value ``min(1, 1/Lambda)`` for ``H0:
    effect = 0``: the probability that it *ever* drops below alpha under
    ``H0`` is at most alpha. A zero ``se`` gives a degenerate interval.
    """
    d, s, n = _f(estimate), _f(se), _f(n_eff)
    r = optimal_mixture_ratio(alpha) * np.maximum(n, 1e-12) / planned_n_eff
    half = s * np.sqrt((1.0 + r) / r * np.log((1.0 + r) / alpha**2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(s > 0, d / s, np.where(d == 0, 0.0, np.inf))
    log_lambda = 0.5 * r / (1.0 + r) * z * z - 0.5 * np.log1p(r)
    p = np.minimum(1.0, np.exp(-log_lambda))
    return d - half, d + half, p


def welch_difference(
    mean_c: ArrayLike, var_c: ArrayLike, n_c: ArrayLike,
    mean_t: ArrayLike, var_t: ArrayLike, n_t: ArrayLike,
) -> tuple[Array, Array]:
    """``(mean_t - mean_c, se)`` with the unpooled (Welch) standard error."""
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(_f(var_t) / _f(n_t) + _f(var_c) / _f(n_c))
    return _f(mean_t) - _f(mean_c), se


def proportion_difference(
    x_c: ArrayLike, n_c: ArrayLike, x_t: ArrayLike, n_t: ArrayLike
) -> tuple[Array, Array]:
    """``(p_t - p_c, se)``; the variance uses ``(x + 1) / (n + 2)`` so it is never zero.

    The Agresti-Caffo adjustment keeps a 0-of-n arm from claiming certainty
    while leaving the estimate itself unadjusted.
    """
    xc, nc, xt, nt = _f(x_c), _f(n_c), _f(x_t), _f(n_t)
    with np.errstate(invalid="ignore", divide="ignore"):
        pc_s, pt_s = (xc + 1.0) / (nc + 2.0), (xt + 1.0) / (nt + 2.0)
        se = np.sqrt(pt_s * (1.0 - pt_s) / nt + pc_s * (1.0 - pc_s) / nc)
        return xt / nt - xc / nc, se


def pooled_proportion_difference(
    x_c: ArrayLike, n_c: ArrayLike, x_t: ArrayLike, n_t: ArrayLike
) -> tuple[Array, Array]:
    """``(p_t - p_c, se)`` with a score-type standard error that a small arm cannot shrink.

    ``se = max(se_pooled, se_unpooled)``: the pooled (score) variance
    ``p(1 - p)(1/n_c + 1/n_t)`` with ``p`` the pooled rate is the exact null
    variance of the difference, so a small arm that happened to see few
    events cannot claim a tiny variance (the Wald test's anti-conservative
    failure with rare events and unequal arms); the unpooled Agresti-Caffo
    variance (:func:`proportion_difference`) keeps the interval honest when
    the arms really differ. Taking the larger is conservative under both.
    """
    xc, nc, xt, nt = _f(x_c), _f(n_c), _f(x_t), _f(n_t)
    est, se_unpooled = proportion_difference(xc, nc, xt, nt)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (xc + xt) / (nc + nt)
        se_pooled = np.sqrt(pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt))
    return est, np.fmax(se_pooled, se_unpooled)


def log_ratio_of_means(
    mean_c: ArrayLike, var_c: ArrayLike, n_c: ArrayLike,
    mean_t: ArrayLike, var_t: ArrayLike, n_t: ArrayLike,
) -> tuple[Array, Array]:
    """``(log(mean_t / mean_c), se)`` by the delta method (NaN unless both means are positive)."""
    mc, mt = _f(mean_c), _f(mean_t)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = (mc > 0) & (mt > 0)
        est = np.where(ok, np.log(np.where(ok, mt, 1.0)) - np.log(np.where(ok, mc, 1.0)), np.nan)
        se = np.sqrt(_f(var_t) / (_f(n_t) * mt * mt) + _f(var_c) / (_f(n_c) * mc * mc))
    return est, np.where(ok, se, np.nan)


#: Dirichlet concentration of the sample-ratio mixture (prior sample size around the planned split).
SRM_CONCENTRATION = 1000.0


def srm_log_bayes_factor(
    n_control: ArrayLike, n_treatment: ArrayLike, treatment_fraction: float,
    concentration: float = SRM_CONCENTRATION,
) -> Array:
    """Log Bayes factor of "the split is not the configured one" (Lindon & Malek 2022).

    The multinomial mixture SPRT for two cells: under ``H0`` the treatment
    count is Binomial(N, p); the alternative mixes the share over a
    Beta(k p, k (1 - p)) prior (the Dirichlet of Lindon and Malek, centred
    on the planned split with prior sample size ``k``)::

        BF = B(k p + n_t, k q + n_c) / B(k p, k q) / (p**n_t * q**n_c)

    ``BF`` is a nonnegative martingale under ``H0`` with mean 1, so by Ville's
    inequality ``P(BF ever >= 1/alpha) <= alpha`` however often it is checked.
    """
    nc, nt = _f(n_control), _f(n_treatment)
    p = float(treatment_fraction)
    q = 1.0 - p
    a, b = concentration * p, concentration * q
    log_marginal = _f(special.betaln(a + nt, b + nc)) - float(special.betaln(a, b))
    out: Array = log_marginal - nt * np.log(p) - nc * np.log(q)
    return out


def srm_p_value(
    n_control: ArrayLike, n_treatment: ArrayLike, treatment_fraction: float,
    concentration: float = SRM_CONCENTRATION,
) -> Array:
    """Anytime-valid p-value ``min(1, 1/BF)`` of the sample-ratio test (1 when empty).

    Halting when it drops below ``srm_alpha`` at *any* look halts a healthy
    test with probability at most ``srm_alpha`` over the whole test.
    """
    log_bf = srm_log_bayes_factor(n_control, n_treatment, treatment_fraction, concentration)
    return np.minimum(1.0, np.exp(-np.maximum(log_bf, -700.0)))

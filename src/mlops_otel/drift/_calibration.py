"""Calibration of drift decisions for sample size and serial dependence (pure numpy/scipy).

Two things make a raw KS distance mean different things on different traffic:

* **Sample size.** Under no drift the distance shrinks like ``1/sqrt(n)``; a fixed
  threshold is crossed by chance at small windows. The decision therefore also
  requires the distance to be *significant*.
* **Serial dependence.** Traffic from the same equipment in bursts is
  autocorrelated; ``n`` such samples carry the information of fewer
  independent ones. The significance is computed at the *effective* sample
  sizes ``n / tau`` with ``tau = (1 + phi) / (1 - phi)`` the integrated
  autocorrelation time of an AR(1) fitted by the lag-1 autocorrelation
  (bias-corrected, clipped to ``[0, 0.999]``). Lag 1 only, on purpose: a mean
  shift inside the window inflates the autocorrelation at every lag, and
  summing many lags would then shrink the effective size exactly when drift
  starts; at lag 1 a 1 sd step in mid-window raises ``phi`` by ~0.15 only.

:func:`ks_pvalue_exact` is the exact two-sample KS distribution (the lattice
path count of :func:`scipy.stats.ks_2samp` ``method="exact"``), used when the
effective sizes are small; above :data:`EXACT_MAX_PRODUCT` the asymptotic
:func:`~._stats.ks_pvalue` applies.
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np
from scipy import special

from ._stats import FloatArray, ks_pvalue

__all__ = [
    "EXACT_MAX_PRODUCT",
    "KSCalibrated",
    "autocorrelation_time",
    "effective_size",
    "ks_calibrated",
    "ks_pvalue_exact",
]

#: Effective sizes with ``n * m`` up to this use the exact distribution (a few ms at most).
EXACT_MAX_PRODUCT = 10_000
_PHI_MAX = 0.999
#: Standard errors added to the autocorrelation estimate (a one-sided 95% upper bound).
UPPER_Z = 1.645


def autocorrelation_time(values: FloatArray, z: float = UPPER_Z) -> float:
    """``(1 + phi) / (1 - phi)`` for an upper bound *phi* of the lag-1 autocorrelation of *values* (>= 1).

    Values are taken in arrival order. *phi* is the lag-1 autocorrelation,
    bias-corrected, plus *z* of its standard errors ``sqrt((1 - phi^2) / n)``:
    a short window gives a noisy estimate, and underestimating the dependence
    is what causes false alarms. Fewer than 8 values, or a constant series,
    give 1 (nothing to estimate from).
    """
    n = int(values.shape[0])
    if n < 8:
        return 1.0
    x = values - values.mean()
    denom = float(np.dot(x, x))
    if denom <= 0.0 or float(values.min()) == float(values.max()):
        return 1.0
    r1 = float(np.dot(x[:-1], x[1:])) / denom
    # E[r1] ~ phi - (1 + 3 phi) / n for an AR(1): undo the downward bias.
    phi = min(_PHI_MAX, max(0.0, r1 + (1.0 + 3.0 * r1) / n))
    phi = min(_PHI_MAX, phi + z * math.sqrt((1.0 - phi * phi) / n))
    return (1.0 + phi) / (1.0 - phi)


def effective_size(values: FloatArray) -> float:
    """The number of independent samples *values* are worth: ``n / tau`` (at least 1 when not empty)."""
    n = int(values.shape[0])
    return 0.0 if n == 0 else max(1.0, n / autocorrelation_time(values))


def ks_pvalue_exact(statistic: float, n: int, m: int) -> float:
    """Exact two-sided p-value ``P(D >= statistic)`` of the two-sample KS test with sizes *n*, *m*.

    Counts the monotone lattice paths from (0, 0) to (n, m) that stay
    strictly inside ``|i/n - j/m| < d`` (continuous data, no ties): one numpy
    cumulative sum per row of the smaller size, rescaled per row so nothing
    overflows. Equal to ``scipy.stats.ks_2samp(x, y, method="exact").pvalue``.
    """
    if n < 1 or m < 1:
        raise ValueError(f"sizes must be >= 1, got n={n!r}, m={m!r}")
    if math.isnan(statistic):
        return math.nan
    if statistic <= 0.0:
        return 1.0
    if n > m:
        n, m = m, n
    g = math.gcd(n, m)
    lcm = n * m // g
    # D takes values k / lcm; in integer units of i*m - j*n the boundary is h = k * g.
    h = round(statistic * lcm) * g
    if h <= 0:
        return 1.0
    if h > n * m:
        return 0.0
    return _exact(h, n, m)


@functools.lru_cache(maxsize=4096)
def _exact(h: int, n: int, m: int) -> float:
    """:func:`ks_pvalue_exact` in integer units (cached: successive checks repeat sizes and distances)."""
    j = np.arange(m + 1)
    row = np.where(j * n < h, 1.0, 0.0)  # i = 0: inside while j*n < h
    log_scale = 0.0
    for i in range(1, n + 1):
        lo = max(0, (i * m - h) // n + 1)
        hi = min(m, -((-(i * m + h)) // n) - 1)
        new = np.zeros(m + 1)
        if lo <= hi:
            new[lo:hi + 1] = np.cumsum(row[lo:hi + 1])
        top = float(new.max())
        if top <= 0.0:
            return 1.0
        row = new / top
        log_scale += math.log(top)
    inside = row[m]
    if inside <= 0.0:
        return 1.0
    log_total = special.gammaln(n + m + 1) - special.gammaln(n + 1) - special.gammaln(m + 1)
    log_inside = math.log(inside) + log_scale - float(log_total)
    return float(min(1.0, max(0.0, -math.expm1(min(0.0, log_inside)))))


@attrs.frozen
class KSCalibrated:
    """A KS p-value at effective sample sizes, and how it was computed."""

    p_value: float
    effective_production: float
    effective_reference: float
    method: str  # "exact" or "asymptotic"


def ks_calibrated(statistic: float, n_production: float, n_reference: float) -> KSCalibrated:
    """The p-value of a KS *statistic* when the samples are worth these effective sizes."""
    n = max(1, round(n_production))
    m = max(1, round(n_reference))
    if n * m <= EXACT_MAX_PRODUCT:
        return KSCalibrated(ks_pvalue_exact(statistic, n, m), n_production, n_reference, "exact")
    return KSCalibrated(ks_pvalue(statistic, n, m), n_production, n_reference, "asymptotic")

"""Allowances for estimating from a short baseline: the sigma widening factor (with the
chi-square quantile and incomplete gamma behind it) and the Wilson bound on a failure rate.
Pure maths on plain floats; see the package docstring for why they are needed."""

from __future__ import annotations

import math
from statistics import NormalDist


def sigma_allowance(batches: int, *, confidence: float | None) -> float:
    """Factor on sigma for a baseline of ``batches`` batch means (1.0 when confidence is None)."""
    if confidence is None:
        return 1.0
    if batches < 2:
        raise ValueError(f"need at least 2 baseline batches, got {batches}")
    df = batches - 1
    return math.sqrt((1 + 1 / batches) * df / _chi2_quantile(1 - confidence, df))


def fail_rate_bound(rate: float, n: int, confidence: float | None) -> float:
    """Baseline failure rate for the CUSUM: Wilson upper bound (or Jeffreys point estimate),
    kept half an observation away from 0 and 1 so both log-ratios stay finite."""
    edge = 0.5 / (n + 1)
    if confidence is None:
        p0 = (rate * n + 0.5) / (n + 1)
    else:
        z = NormalDist().inv_cdf(confidence)
        denom = 1 + z * z / n
        centre = (rate + z * z / (2 * n)) / denom
        p0 = centre + z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denom
    return min(max(p0, edge), 1 - edge)


def _chi2_quantile(p: float, df: int) -> float:
    """Lower-tail chi-square quantile for p <= 0.5, by bisection below df (the median is less)."""
    lo, hi = 0.0, float(df)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gamma_p(df / 2, mid / 2) < p else (lo, mid)
    return (lo + hi) / 2


def _gamma_p(a: float, x: float) -> float:
    """Regularized lower incomplete gamma P(a, x) by its power series (fine for x <= a)."""
    if x <= 0:
        return 0.0
    term = total = 1 / a
    for i in range(1, 10_000):
        term *= x / (a + i)
        total += term
        if term < total * 1e-16:
            break
    return total * math.exp(-x + a * math.log(x) - math.lgamma(a))

"""Expected maximum validation performance (Dodge et al., EMNLP 2019).

Given the N validation scores of a sweep, sorted ascending v_(1) <= ... <= v_(N), the expected
best of n trials drawn *with* replacement is

    E[max of n] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n]

and, drawn *without* replacement (n <= N, the unbiased estimator of the same quantity),

    E[max of n] = sum_{i >= n} v_(i) C(i-1, n-1) / C(N, n).

The band is one standard deviation of the max under the same distribution, clipped to the
observed range, as in the paper's figures. For a minimised objective the same maths runs on
negated scores, so "max" reads as "best".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from hpsearch_budget.errors import HpauditInputError


@dataclass(frozen=True, slots=True)
class EvpPoint:
    """Expected best of ``n`` trials, its band, and (when known) the carbon that costs."""

    n: int
    expected: float
    std: float
    low: float
    high: float
    co2e_g: float | None = None


def _max_probabilities(n_values: int, n: int, *, replacement: bool) -> np.ndarray:
    """P(the best of n draws is the i-th smallest of N), i = 1..N."""
    i = np.arange(1, n_values + 1, dtype=float)
    if replacement:
        return (i / n_values) ** n - ((i - 1) / n_values) ** n
    if n > n_values:
        raise HpauditInputError(
            f"cannot draw {n} trials without replacement from {n_values}; use n <= {n_values}"
        )
    p = np.zeros(n_values)
    k = i >= n
    # log C(i-1, n-1) - log C(N, n), in log space so N = 10^5 does not overflow.
    log_p = (
        gammaln(i[k])
        - gammaln(n)
        - gammaln(i[k] - n + 1)
        - (gammaln(n_values + 1) - gammaln(n + 1) - gammaln(n_values - n + 1))
    )
    p[k] = np.exp(log_p)
    return p


def expected_max(
    scores: Sequence[float] | np.ndarray, n: int, *, replacement: bool = True
) -> tuple[float, float]:
    """Expected maximum of ``n`` draws from ``scores`` and its standard deviation.

    >>> [round(x, 6) for x in expected_max([1.0, 2.0, 3.0], 1)]
    [2.0, 0.816497]
    >>> round(expected_max([1.0, 2.0, 3.0], 2)[0], 6)  # (1*1 + 2*3 + 3*5) / 9
    2.444444
    >>> round(expected_max([1.0, 2.0, 3.0], 2, replacement=False)[0], 6)  # pairs: 2, 3, 3
    2.666667
    """
    v = np.sort(np.asarray(scores, dtype=float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise HpauditInputError("expected maximum needs at least one finite score")
    if n < 1:
        raise HpauditInputError(f"n must be >= 1 trials, got {n}")
    p = _max_probabilities(v.size, n, replacement=replacement)
    mean = float(p @ v)
    var = max(0.0, float(p @ (v * v)) - mean * mean)
    return mean, math.sqrt(var)


def budget_grid(n_max: int, points: int = 60) -> list[int]:
    """Distinct trial counts 1..n_max, dense at the start, log-spaced after (a curve's x)."""
    if n_max < 1:
        return []
    grid = np.unique(np.round(np.geomspace(1, n_max, num=min(points, n_max))).astype(int))
    return [int(x) for x in grid]


def evp_curve(
    values: Sequence[float] | np.ndarray,
    *,
    maximize: bool = True,
    replacement: bool = True,
    co2e_g_per_trial: float | None = None,
    n_max: int | None = None,
    points: int = 60,
) -> list[EvpPoint]:
    """The expected-best curve over trial budgets 1..``n_max`` (default: the number of scores).

    ``values`` are objective values; with ``maximize=False`` the curve is of the expected
    minimum. ``co2e_g_per_trial`` turns each budget into grams of CO2e (n times that).

    >>> [round(p.expected, 3) for p in evp_curve([3.0, 1.0, 2.0], maximize=False)]
    [2.0, 1.556, 1.333]
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    sign = 1.0 if maximize else -1.0
    scores = sign * v
    top = n_max if n_max is not None else v.size
    if not replacement:
        top = min(top, v.size)
    points_out: list[EvpPoint] = []
    if v.size == 0:
        return points_out
    lo_obs, hi_obs = float(scores.min()), float(scores.max())
    for n in budget_grid(top, points):
        mean, std = expected_max(scores, n, replacement=replacement)
        low, high = max(lo_obs, mean - std), min(hi_obs, mean + std)
        if sign < 0:  # back to objective units: best = min
            mean, low, high = -mean, -high, -low
        co2 = None if co2e_g_per_trial is None else n * co2e_g_per_trial
        points_out.append(EvpPoint(n, mean, std, low, high, co2))
    return points_out

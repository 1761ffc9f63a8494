"""Expected max validation performance against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hpsearch_budget.analysis import evp_curve, expected_max
from hpsearch_budget.errors import HpauditInputError

SCORES = [0.61, 0.7, 0.55, 0.7, 0.83, 0.4]  # a tie on purpose


def brute(scores: list[float], n: int, replacement: bool) -> tuple[float, float]:
    draws = (
        itertools.product(scores, repeat=n) if replacement else itertools.combinations(scores, n)
    )
    maxima = np.array([max(d) for d in draws])
    return float(maxima.mean()), float(maxima.std())


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("replacement", [True, False])
def test_expected_max_matches_enumeration(n: int, replacement: bool) -> None:
    mean, std = expected_max(SCORES, n, replacement=replacement)
    want_mean, want_std = brute(SCORES, n, replacement)
    assert mean == pytest.approx(want_mean, rel=1e-12)
    assert std == pytest.approx(want_std, rel=1e-9, abs=1e-12)


def test_without_replacement_reaches_the_max_with_all_trials() -> None:
    mean, std = expected_max(SCORES, len(SCORES), replacement=False)
    assert mean == pytest.approx(max(SCORES)) and std == pytest.approx(0.0, abs=1e-9)
    # with replacement it stays below the max: some draws repeat worse trials
    assert expected_max(SCORES, len(SCORES))[0] < max(SCORES)


def test_large_n_is_stable() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=20_000)
    mean, _ = expected_max(v, 5_000, replacement=False)
    assert math.isfinite(mean) and np.sort(v)[-50] < mean <= v.max()


def test_curve_for_minimisation_is_expected_minimum_and_monotone() -> None:
    pts = evp_curve(SCORES, maximize=False, co2e_g_per_trial=2.0)
    assert pts[0].expected == pytest.approx(np.mean(SCORES))
    assert pts[-1].expected == pytest.approx(-brute([-s for s in SCORES], 6, True)[0])
    assert all(a.expected >= b.expected for a, b in itertools.pairwise(pts))
    assert all(p.low <= p.expected <= p.high for p in pts)
    assert [p.co2e_g for p in pts] == [2.0 * p.n for p in pts]


def test_bad_input() -> None:
    with pytest.raises(HpauditInputError):
        expected_max([], 1)
    with pytest.raises(HpauditInputError):
        expected_max([1.0, 2.0], 3, replacement=False)
    with pytest.raises(HpauditInputError):
        expected_max([1.0], 0)

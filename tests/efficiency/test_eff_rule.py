"""The cost-aware promotion rule shared by the Optuna pruner and the Ray scheduler."""

from __future__ import annotations

import math

import pytest

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.optuna import keep_fraction, promote_at_rung, rungs


def test_rungs_are_geometric_and_below_max() -> None:
    assert rungs(4, 52, 3) == [4, 12, 36]
    assert rungs(1, 9, 3) == [1, 3]
    assert rungs(5, 5, 2) == []


@pytest.mark.parametrize("args", [(0, 10, 3), (1, 10, 1), (10, 5, 3)])
def test_rungs_reject_bad_settings(args: tuple[int, int, int]) -> None:
    with pytest.raises(HpauditInputError, match="min_resource"):
        rungs(*args)


def test_keep_fraction_scales_with_cost_and_is_clipped() -> None:
    assert keep_fraction(1.0, 1.0) == pytest.approx(1 / 3)
    assert keep_fraction(4.0, 1.0) == pytest.approx(1 / 6)  # 4x dearer: (1/4)**0.5 of 1/3
    assert keep_fraction(0.25, 1.0) == pytest.approx(2 / 3)
    assert keep_fraction(1e6, 1.0) == pytest.approx(1 / 9)  # floor 1/rf**2
    assert keep_fraction(1e-6, 1.0) == 1.0
    assert keep_fraction(None, 1.0) == pytest.approx(1 / 3)  # unknown cost: plain ASHA
    assert keep_fraction(4.0, 1.0, cost_exponent=0.0) == pytest.approx(1 / 3)


def test_same_rank_cheap_goes_on_dear_stops() -> None:
    peers = [float(v) for v in range(1, 13)]  # 12 peers; value 8 has 4 better
    assert promote_at_rung(8.0, peers, maximize=True, rate=0.25, median_rate=1.0)  # keep 8
    assert not promote_at_rung(8.0, peers, maximize=True, rate=1.0, median_rate=1.0)  # keep 4
    assert promote_at_rung(9.0, peers, maximize=True, rate=1.0, median_rate=1.0)  # 3 better
    assert not promote_at_rung(9.0, peers, maximize=True, rate=4.0, median_rate=1.0)  # keep 2


def test_direction_best_and_few_peers() -> None:
    peers = [5.0, 1.0, 3.0, 4.0, 2.0, 6.0]
    assert promote_at_rung(1.0, peers, maximize=False, rate=100.0, median_rate=1.0)  # best
    assert not promote_at_rung(6.0, peers, maximize=False)
    assert promote_at_rung(0.0, [0.0, 9.0], maximize=True)  # fewer than rf peers: go on
    assert not promote_at_rung(math.nan, peers, maximize=True)

"""forecast_sweep: accuracy, interval and input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpsearch_budget.budget import (
    Cost,
    cost_shifted,
    forecast_sweep,
    forecast_sweep_from_entries,
)
from hpsearch_budget.errors import HpauditInputError


def test_forecast_is_accurate_and_its_interval_covers_on_lognormal_costs() -> None:
    rng = np.random.default_rng(0)
    apes, covered = [], []
    for i in range(60):
        costs = rng.lognormal(mean=np.log(1e5), sigma=0.5, size=400)
        f = forecast_sweep([Cost(energy_j=c) for c in costs[:40]], n_total=400, seed=i)
        truth = costs.sum()
        apes.append(abs(f.total.energy_j - truth) / truth)
        covered.append(f.low.energy_j <= truth <= f.high.energy_j)
    assert np.median(apes) < 0.06  # sd of a 40-sample mean of sigma=0.5 lognormals: ~8.5%
    assert 0.75 <= np.mean(covered) <= 1.0  # nominal 90%


def test_running_trials_and_final_training() -> None:
    done = [Cost(energy_j=100.0, co2e_g=1.0)] * 4
    f = forecast_sweep(done, n_total=10, running=[30.0, 150.0], n_final_runs=3)
    # 4 remaining x 100 + running: 70 more for the first, nothing for the one above the mean.
    assert f.remaining.energy_j == pytest.approx(470.0)
    assert f.spent.energy_j == pytest.approx(580.0)
    assert f.total.energy_j == pytest.approx(1050.0)
    assert f.n_remaining == 4
    assert f.final is not None and f.final.energy_j == pytest.approx(300.0)
    assert f.as_dict()["estimated"] is True


def test_from_ledger_entries() -> None:
    rows = pd.DataFrame(
        {
            "phase": ["tuning", "tuning", "tuning", "final"],
            "status": ["complete", "pruned", "running", "complete"],
            "energy_j": [100.0, 20.0, 10.0, 999.0],
            "co2e_g": [1.0, 0.2, 0.1, 9.0],
            "usd": [0.0] * 4,
            "gpu_s": [10.0, 2.0, 1.0, 99.0],
        }
    )
    f = forecast_sweep_from_entries(rows, n_total=5, n_final_runs=1)
    assert (f.n_done, f.n_running, f.n_remaining) == (2, 1, 2)
    assert f.final is not None and f.final.energy_j == 100.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(finished=[], n_total=3), "no finished trial"),
        (dict(finished=[1.0, 2.0], n_total=1), "n_total"),
        (dict(finished=[-1.0], n_total=3), ">= 0"),
        (dict(finished=[1.0], n_total=3, level=1.5), "level"),
        (dict(finished=[1.0], n_total=3, n_final_runs=-1), "n_final_runs"),
        (dict(finished=[1.0], n_total=3, n_final_runs=1.5), "n_final_runs"),
        (dict(finished=["a"], n_total=3), "Cost objects or joules"),
        (dict(finished=[np.int64(5), True], n_total=3), "Cost objects or joules"),
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(HpauditInputError, match=match):
        forecast_sweep(**kwargs)


# -- a sweep whose cost shifted (an adaptive sampler) ----------------------------------------


def _drifting(rng: np.random.Generator, n: int, later: float, at: int = 10) -> np.ndarray:
    """Skewed trial costs; after the first ``at`` (random startup) each costs ``later`` x."""
    costs = rng.lognormal(np.log(1e5), 0.6, size=n)
    costs[at:] *= later
    return costs


def test_shift_check_rarely_fires_on_random_search_and_finds_a_shift() -> None:
    rng = np.random.default_rng(1)
    same = [cost_shifted(rng.lognormal(np.log(1e5), 0.6, size=30)) for _ in range(300)]
    assert np.mean([p is not None for p in same]) <= 0.1  # a 5 % test
    moved = [cost_shifted(_drifting(rng, 30, 0.4)[:30]) for _ in range(100)]
    assert np.mean([p is not None for p in moved]) >= 0.6  # 15 vs 15, 5 of them moved too
    assert all(p is None or 0.0 <= p < 0.05 for p in moved)
    assert cost_shifted([1e5] * 5 + [1e4] * 4) is None  # too few trials to tell
    assert cost_shifted([1e5] * 6 + [1e4] * 6) == 0.0  # constant halves, clearly apart


def test_forecast_of_a_shifted_sweep_uses_its_later_trials() -> None:
    rng = np.random.default_rng(2)
    errors: dict[bool, list[float]] = {True: [], False: []}
    covered, widths = [], []
    for seed in range(40):
        costs = _drifting(rng, 200, 0.5, at=20)  # TPESampler(n_startup_trials=20)
        truth = costs.sum()
        for check in (True, False):
            f = forecast_sweep(list(costs[:40]), n_total=200, seed=seed, shift_check=check)
            errors[check].append(abs(f.total.energy_j / truth - 1))
            if check and "later" in f.method:
                assert f.method.startswith("bootstrap mean of the later 20 of 40 finished")
                assert f.low.energy_j <= f.total.energy_j <= f.high.energy_j
                covered.append(f.low.energy_j <= truth <= f.high.energy_j)
                plain = forecast_sweep(list(costs[20:40]), n_total=180, seed=seed)
                widths.append(
                    (f.high.energy_j - f.low.energy_j, plain.high.energy_j - plain.low.energy_j)
                )
    assert np.median(errors[True]) < 0.75 * np.median(errors[False])
    # the interval allows for the sweep drifting on: wider than the later half's own, covering
    assert len(covered) >= 20 and np.mean(covered) >= 0.85
    assert all(shifted > later for shifted, later in widths)

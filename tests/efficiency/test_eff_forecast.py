"""forecast_sweep: accuracy, interval and input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpsearch_budget.budget import Cost, forecast_sweep, forecast_sweep_from_entries
from hpsearch_budget.errors import HpauditInputError


def test_forecast_is_accurate_and_its_interval_covers_on_lognormal_costs() -> None:
    rng = np.random.default_rng(0)
    apes, covered = [], []
    for _ in range(60):
        costs = rng.lognormal(mean=np.log(1e5), sigma=0.5, size=400)
        f = forecast_sweep([Cost(energy_j=c) for c in costs[:40]], n_total=400, seed=None)
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
    ],
)
def test_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(HpauditInputError, match=match):
        forecast_sweep(**kwargs)

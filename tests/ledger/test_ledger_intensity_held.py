"""A carbon-intensity provider that fails while a sweep runs (a time series that ends, a live
source that goes down) must not fail the trials or lose their rows: the ledger charges the
provider's last good value, labelled as held."""

from __future__ import annotations

import optuna
import pytest

from hpsearch_budget.carbon import CallableIntensity, CarbonModel
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.optuna import metered


class Grid:
    """A live intensity source that can be switched off."""

    def __init__(self) -> None:
        self.down = False

    def __call__(self, when: object) -> float:
        if self.down:
            raise ConnectionError("grid API unreachable")
        return 400.0


def _cpu(joules: float) -> Measurement:
    return Measurement(1.0, {"cpu": joules}, {"cpu": Source.ESTIMATED})


def test_a_window_outliving_its_provider_is_charged_at_the_last_value(ledger_url: str) -> None:
    grid = Grid()
    with Ledger(ledger_url, carbon=CarbonModel(CallableIntensity(grid, "grid API"))) as ledger:
        w = ledger.open_window("s", "s:0", trial_number=0)
        ledger.checkpoint(w, _cpu(3.6e6), step=0)  # 1 kWh at 400 g/kWh, PUE 1.58
        grid.down = True
        ledger.checkpoint(w, _cpu(7.2e6), step=1)
        cost = ledger.finalize(w, _cpu(10.8e6), status="complete", value=1.0)
        row = ledger.entries(study="s").iloc[0]
    assert row["status"] == "complete" and row["energy_j"] == pytest.approx(10.8e6)
    assert cost.co2e_g == pytest.approx(3 * 1.58 * 400.0)
    sources = row["intensity_source"].split("; ")
    assert sources[0].startswith("grid API") and sources[1].endswith("held: provider failed")


def test_a_provider_that_never_answers_fails_before_the_trial_runs(sqlite_url: str) -> None:
    grid = Grid()
    grid.down = True
    with Ledger(sqlite_url, carbon=CarbonModel(CallableIntensity(grid, "grid API"))) as ledger:
        with pytest.raises(ConnectionError, match="grid API unreachable"):
            ledger.open_window("s", "s:0", trial_number=0)
        assert ledger.entries().empty


def test_an_optuna_sweep_goes_on_when_the_intensity_source_goes_down(sqlite_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = Grid()
    ledger = Ledger(sqlite_url, carbon=CarbonModel(CallableIntensity(grid, "grid API")))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            if trial.number == 1 and step == 1:
                grid.down = True  # mid-trial, and for every trial after it
            sum(range(20_000))
            trial.report(x, step)
        return x

    study = optuna.create_study()
    study.optimize(metered(objective, ledger, min_checkpoint_interval_s=0), n_trials=3)
    rows = ledger.entries(study=study.study_name).sort_values("trial_number")
    ledger.close()
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert list(rows["status"]) == ["complete"] * 3
    assert all(rows["co2e_g"] > 0)
    held = rows["intensity_source"].str.contains("held: provider failed")
    assert list(held) == [False, True, True]

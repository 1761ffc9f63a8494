"""``optimize(n_trials=N)`` records its plan, so ``hpaudit report`` can forecast the cost to
finish a sweep the budget or a crash cut short, with no extra flag."""

from __future__ import annotations

from pathlib import Path

import optuna

from hpsearch_budget import Budget
from hpsearch_budget.meters import ReplayMeter
from hpsearch_budget.optuna import optimize
from hpsearch_budget.report import build_report, load_sweep


def _objective(meter: ReplayMeter):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1, 1)
        meter.advance(1.0)
        trial.report(x, 0)
        return x**2

    return objective


def test_optimize_records_the_plan_the_report_forecasts_from(tmp_path: Path) -> None:
    storage, ledger = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    meter = ReplayMeter(power_w=10.0)
    study = optuna.create_study(study_name="planned", storage=storage)
    optimize(study, _objective(meter), budget=Budget(energy_kwh=1.0), ledger=ledger,
             meter=meter, n_trials=3, policy=False)  # fmt: skip
    optimize(study, _objective(meter), budget=Budget(energy_kwh=1.0), ledger=ledger,
             meter=meter, n_trials=2, policy=False)  # fmt: skip
    assert study.user_attrs["n_trials"] == 5  # trials already run + this call's

    forecast = build_report(load_sweep(storage, study="planned", ledger=ledger)).forecast
    assert forecast is not None
    assert forecast.n_trials_planned == 5
    assert forecast.n_trials_planned_source == "study user attribute n_trials"
    assert forecast.n_remaining == 0

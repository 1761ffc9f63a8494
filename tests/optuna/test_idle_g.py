"""Idle windows: what the meter measures between trials is written to the ledger as ``idle``
rows, so that trials + idle == what the meter measured (DESIGN, Measurement: conservation),
without ever being taken for a trial."""

from __future__ import annotations

import math
import threading

import optuna
import pytest

from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, ReplayMeter
from hpsearch_budget.optuna import _state, optimize

WATTS = 20.0
BIG = Budget(energy_kwh=1.0)


class CountingMeter(ReplayMeter):
    """A replay meter that counts its reads (what a trial costs in meter reads)."""

    def __init__(self) -> None:
        super().__init__(power_w=WATTS)
        self.reads = 0

    def read(self):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().read()


def _objective(meter: ReplayMeter, work_s: float = 1.0):
    def objective(trial: optuna.Trial) -> float:
        meter.advance(work_s)
        return trial.suggest_float("x", 0.0, 1.0)

    return objective


def _between(meter: ReplayMeter, gap_s: float):
    """An Optuna callback: ``gap_s`` of the machine's time after each trial, with the trial's
    window already closed (Optuna's storage and sampler work, in a real sweep)."""

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        meter.advance(gap_s)

    return callback


def _rows(ledger: Ledger, study: str):
    rows = ledger.entries(study=study)
    return rows[rows["phase"] == "tuning"], rows[rows["phase"] == "idle"]


def _sweep(url: str, meter: ReplayMeter, name: str, n: int, **kwargs):  # type: ignore[no-untyped-def]
    study = optuna.create_study(study_name=name)
    options = {"callbacks": [_between(meter, 0.25)], "checkpoint_interval_s": 30.0, **kwargs}
    return optimize(study, _objective(meter), budget=BIG, ledger=url, meter=meter, n_trials=n,
                    **options)  # fmt: skip


def test_trials_plus_idle_equal_what_the_meter_measured(sqlite_url):
    meter = ReplayMeter(power_w=WATTS)
    run = _sweep(sqlite_url, meter, "conserve", 6)
    ledger = Ledger(sqlite_url)
    trials, idle = _rows(ledger, "conserve")
    measured = meter.read().energy_j["replay"]  # the meter starts at 0 with the first trial
    assert len(trials) == 6 and len(idle) == 1
    assert math.fsum([*trials["energy_j"], *idle["energy_j"]]) == pytest.approx(measured, 1e-12)
    assert idle["energy_j"].sum() == pytest.approx(6 * 0.25 * WATTS, 1e-12)
    row = idle.iloc[0]
    assert row["status"] == "complete" and row["source"] == "replayed"
    assert pd_isna(row["trial_number"]) and row["trial_key"].startswith("idle:")
    # A finished row: the budget counts it (spent is the sweep's whole energy).
    assert run.spent.energy_j == pytest.approx(measured, 1e-12)
    assert run.n_trials == 6


def test_conservation_with_two_threads(sqlite_url):
    meter = ReplayMeter(power_w=WATTS)
    done, lock = [0], threading.Lock()

    def last_gap(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        meter.advance(0.1)  # the other thread's trial may be running: then it is its share
        with lock:
            done[0] += 1
            if done[0] == 8:  # every trial has ended: no window is open
                meter.advance(2.0)

    study = optuna.create_study(study_name="threads")
    optimize(study, _objective(meter, 0.5), budget=BIG, ledger=sqlite_url, meter=meter,
             n_trials=8, n_jobs=2, callbacks=[last_gap])  # fmt: skip
    trials, idle = _rows(Ledger(sqlite_url), "threads")
    measured = meter.read().energy_j["replay"]
    assert len(trials) == 8 and len(idle) >= 1
    assert idle["energy_j"].sum() >= 2.0 * WATTS - 1e-9
    assert math.fsum([*trials["energy_j"], *idle["energy_j"]]) == pytest.approx(measured, 1e-12)


def test_a_long_gap_between_sweeps_is_not_charged(sqlite_url):
    meter = ReplayMeter(power_w=WATTS)
    _sweep(sqlite_url, meter, "gap", 3)
    meter.advance(3600.0)  # a notebook left open for an hour: not the sweep's
    _sweep(sqlite_url, meter, "gap", 3)
    _, idle = _rows(Ledger(sqlite_url), "gap")
    assert idle["energy_j"].sum() == pytest.approx(6 * 0.25 * WATTS, 1e-12)


def test_one_idle_row_per_interval_and_no_meter_read_per_trial(sqlite_url):
    meter = CountingMeter()
    n = 40
    # 0.25 s between trials, 1 s interval: a row every 4 trials or so, not one per trial.
    _sweep(sqlite_url, meter, "rows", n, checkpoint_interval_s=1.0)
    _, idle = _rows(Ledger(sqlite_url), "rows")
    assert 2 <= len(idle) <= n * 0.25 / 1.0 + 1
    assert (idle["wall_s"].iloc[:-1] >= 1.0).all()
    assert idle["energy_j"].sum() == pytest.approx(n * 0.25 * WATTS, 1e-12)
    # Two reads a trial (its window's open and close), plus one per idle row.
    assert meter.reads <= 2 * n + len(idle)


def test_the_forecaster_does_not_learn_from_idle_rows(sqlite_url):
    meter = ReplayMeter(power_w=WATTS)
    _sweep(sqlite_url, meter, "forecast", 5, checkpoint_interval_s=0.5)
    ledger = Ledger(sqlite_url)
    assert len(_rows(ledger, "forecast")[1]) >= 2
    other = _state.StudyState(ledger, "forecast", None)  # another worker, learning from the rows
    other.sync(force=True)
    assert other.forecaster.n_observed == 5
    assert other.forecaster.new_trial().energy_j == pytest.approx(1.0 * WATTS)


def test_the_forecaster_does_not_learn_from_a_final_training(sqlite_url):
    meter = ReplayMeter(power_w=WATTS)
    _sweep(sqlite_url, meter, "final", 5)
    ledger = Ledger(sqlite_url)
    final = ledger.open_window("final", "final:best", phase="final")
    ledger.finalize(final, Measurement(50.0, {"replay": 50.0 * WATTS}), status="complete")
    other = _state.StudyState(ledger, "final", None)
    other.sync(force=True)
    assert other.forecaster.n_observed == 5
    assert other.forecaster.new_trial().energy_j == pytest.approx(1.0 * WATTS)


def pd_isna(value: object) -> bool:
    import pandas as pd

    return bool(pd.isna(value))

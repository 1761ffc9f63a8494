"""A ledger that cannot be written for a while (SQLite locked past $HPAUDIT_LEDGER_TIMEOUT_S by
another process) must not cost the user a trial's result: a failed checkpoint is carried by the
next write, and a failed finalisation keeps the trial's outcome and stops the study."""

from __future__ import annotations

import logging
import sqlite3
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.optuna import metered


class Locker:
    """Another process's write lock on the ledger file (BEGIN EXCLUSIVE), taken and released
    by the objective at chosen points."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=5)

    def take(self) -> None:
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("COMMIT")


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def locked_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Ledger, Locker]:
    monkeypatch.setenv("HPAUDIT_LEDGER_TIMEOUT_S", "0.2")
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    return ledger, Locker(path)


def _busy() -> None:
    sum(range(30_000))


def test_a_failed_checkpoint_is_carried_by_the_next_write(
    locked_ledger: tuple[Ledger, Locker], caplog: pytest.LogCaptureFixture
) -> None:
    ledger, lock = locked_ledger

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            _busy()
            if step == 1:
                lock.take()
            trial.report(x, step)  # step 1: the write fails, the trial goes on
            if step == 1:
                lock.release()
        return x

    study = optuna.create_study()
    with caplog.at_level(logging.WARNING):
        study.optimize(metered(objective, ledger, min_checkpoint_interval_s=0), n_trials=1)
    row = ledger.entries(study=study.study_name).iloc[0]
    ledger.close()
    assert study.trials[0].state == TrialState.COMPLETE
    assert row["status"] == "complete" and row["step"] == 2 and row["energy_j"] > 0
    assert any("ledger checkpoint failed" in r.getMessage() for r in caplog.records)


def test_a_failed_finalisation_keeps_the_result_and_stops_the_study(
    locked_ledger: tuple[Ledger, Locker], caplog: pytest.LogCaptureFixture
) -> None:
    ledger, lock = locked_ledger

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(2):
            _busy()
            trial.report(x, step)
        if trial.number == 1:
            lock.take()  # held until the sweep is over: trial 1's row cannot be finalised
        return x

    study = optuna.create_study()
    wrapped = metered(objective, ledger, min_checkpoint_interval_s=0)
    with caplog.at_level(logging.ERROR):
        study.optimize(wrapped, n_trials=5)
    lock.release()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # stopped after 1
    kept = study.trials[1]
    assert kept.value is not None and kept.user_attrs["energy_kwh"] > 0
    assert "locked" in kept.user_attrs["hpaudit_ledger_error"]
    assert wrapped.ledger_error is not None
    assert any("could not be finalised" in r.getMessage() for r in caplog.records)
    rows = ledger.entries(study=study.study_name).sort_values("trial_number")
    ledger.close()
    rows = rows[rows["phase"] == "tuning"]  # the trials' rows (idle rows are no trial)
    assert list(rows["status"]) == ["complete", "running"]  # reaped as killed later
    assert rows["energy_j"].iloc[1] > 0  # its last checkpoint


def test_a_metered_sweep_raises_no_experimental_warning(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExperimentalWarning)
        study.optimize(
            metered(lambda t: t.suggest_float("x", 0, 1), f"sqlite:///{tmp_path / 'l.db'}"),
            n_trials=2,
        )
    assert len(study.trials) == 2


def test_the_pruner_lets_a_trial_run_on_while_the_ledger_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hpsearch_budget import Budget
    from hpsearch_budget.optuna import BudgetPruner

    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    budget = Budget(energy_kwh=1.0)

    def spoil(value: object) -> None:
        """What a hand edit does to the running row's reservation: text where a number
        belongs (the ledger's reads then fail with a LedgerError), and its repair."""
        other.execute(
            "UPDATE hpaudit_windows SET reserved_energy_j = ? WHERE status = 'running'", (value,)
        )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            _busy()
            if step == 1:
                (reserved,) = other.execute(
                    "SELECT reserved_energy_j FROM hpaudit_windows WHERE status = 'running'"
                ).fetchone()
                spoil("n/a")
            trial.report(x, step)
            pruned = trial.should_prune()  # reads the ledger (ttl_s=0): unreadable at step 1
            if step == 1:
                spoil(reserved)
            if pruned:
                raise optuna.TrialPruned()
        return x

    pruner = BudgetPruner(budget, ledger, max_steps=3, ttl_s=0.0)
    study = optuna.create_study(pruner=pruner)
    with caplog.at_level(logging.WARNING):
        study.optimize(metered(objective, ledger, budget=budget, max_steps=3), n_trials=2)
    rows = ledger.entries(study=study.study_name)
    ledger.close()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert list(rows["status"]) == ["complete"] * 2
    assert any("not pruning while the ledger fails" in r.getMessage() for r in caplog.records)


def test_optimize_raises_the_ledger_error_after_keeping_the_trials(
    locked_ledger: tuple[Ledger, Locker],
) -> None:
    from hpsearch_budget import Budget
    from hpsearch_budget.errors import LedgerError
    from hpsearch_budget.optuna import optimize

    ledger, lock = locked_ledger

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        _busy()
        trial.report(x, 0)
        if trial.number == 1:
            lock.take()
        return x

    study = optuna.create_study()
    with pytest.raises(LedgerError, match="locked"):
        optimize(study, objective, budget=Budget(energy_kwh=1.0), ledger=ledger, n_trials=5)
    lock.release()
    ledger.close()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2

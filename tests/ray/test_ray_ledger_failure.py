"""A ledger that fails for a while (SQLite locked past $HPAUDIT_LEDGER_TIMEOUT_S by another
connection, a hand-spoilt row that makes reads fail) never costs a Ray trial its results: a
failed checkpoint is carried by the next write, a failed final write ends the sweep the way
BudgetStopper ends it and is kept for the caller, and the stopper never crashes the sweep."""

from __future__ import annotations

import pickle
import sqlite3
import time

import pytest
from ray import tune
from ray.tune.execution import class_cache

from hpsearch_budget.budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.ray import BudgetStopper, LedgerCallback, metered

pytestmark = pytest.mark.ray

TIMEOUT = "HPAUDIT_LEDGER_TIMEOUT_S"


@pytest.fixture
def short_lock_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers give up on a locked ledger after 0.3 s: Tune sends its trainables' actors only
    the variables it lists, so this one joins the list."""
    monkeypatch.setenv(TIMEOUT, "0.3")
    listed = class_cache.ENV_VARS_TO_PROPAGATE | {TIMEOUT}
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", listed)


# Connections holding a lock past the trial's end (in the worker: a closed one releases it).
_LOCKS: list[sqlite3.Connection] = []


def _other_connection(sqlite_url: str):
    """Opens another process's connection to the ledger file (in the worker)."""
    path = sqlite_url.removeprefix("sqlite:///")
    return lambda: sqlite3.connect(path, isolation_level=None, timeout=5)


def test_a_locked_ledger_costs_no_result_and_a_lost_end_ends_the_sweep(
    ray_local, trace, sqlite_url, make_run_config, short_lock_timeout
):
    ledger, connect = Ledger(sqlite_url), _other_connection(sqlite_url)

    def train(config):
        other = connect()
        for step in range(3):
            trace.burn(10.0)
            if config["q"] == 0 and step == 1:
                other.execute("BEGIN EXCLUSIVE")  # this checkpoint cannot be written
            tune.report({"loss": config["q"] + step})
            if config["q"] == 0 and step == 1:
                other.execute("COMMIT")
        if config["q"] == 1:
            other.execute("BEGIN EXCLUSIVE")  # held: its final write fails
            _LOCKS.append(other)

    stopper = BudgetStopper(Budget(energy_kwh=1.0), ledger)
    callback = LedgerCallback(ledger, finalize_timeout_s=1)
    grid = tune.Tuner(
        metered(train, ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0, 1, 2])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=make_run_config("locked", stop=stopper, callbacks=[callback]),
    ).fit()

    assert not grid.errors  # no trial failed for the ledger
    by_q = {r.config["q"]: r.metrics for r in grid}
    assert by_q[0]["loss"] == 2 and by_q[1]["loss"] == 3  # every result kept
    assert "locked" in by_q[1]["hpaudit_ledger_final_error"]
    assert by_q[1]["energy_j"] == 30.0  # the whole trial, though the ledger missed its end
    assert stopper.stop_all() and "could not record the end" in stopper.guard.stop_reason
    assert callback.ledger_error is not None and "locked" in callback.ledger_error
    restored = pickle.loads(pickle.dumps(callback))  # as Tuner.restore ships it
    restored.setup()  # a new run (restore(...).fit()) starts without the old run's error
    assert restored.ledger_error is None
    assert 2 not in by_q or by_q[2].get("training_iteration", 0) <= 1  # the sweep ended
    rows = ledger.entries("locked").set_index("trial_number")
    assert rows.loc[0, "status"] == "complete" and rows.loc[0, "energy_j"] == 30.0  # carried
    assert rows.loc[0, "step"] == 2
    assert rows.loc[1, "status"] in ("running", "killed")  # closed at its last checkpoint
    assert rows.loc[1, "energy_j"] == 30.0


def test_the_stopper_does_not_stop_or_crash_while_the_ledger_cannot_be_read(
    ray_local, trace, sqlite_url, make_run_config
):
    ledger, connect = Ledger(sqlite_url), _other_connection(sqlite_url)

    def train(config):
        other = connect()
        query = "SELECT reserved_energy_j FROM hpaudit_windows WHERE status = 'running'"
        spoil = "UPDATE hpaudit_windows SET reserved_energy_j = ? WHERE status = 'running'"
        for step in range(4):
            trace.burn(10.0)
            if config["q"] == 0 and step == 1:  # a hand edit: the driver reads fail till undone
                (kept,) = other.execute(query).fetchone()
                other.execute(spoil, ("n/a",))
            if config["q"] == 0 and step == 3:
                other.execute(spoil, (kept,))
            if config["q"] == 0 and step in (1, 2):
                time.sleep(1.1)  # past the stopper's 1 s reuse of its last read
            tune.report({"loss": config["q"] + step})

    stopper = BudgetStopper(Budget(energy_kwh=1.0), ledger)
    grid = tune.Tuner(
        metered(train, ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0, 1])},
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=make_run_config("spoilt", stop=stopper),
    ).fit()

    assert not grid.errors
    assert sorted(r.metrics["training_iteration"] for r in grid) == [4, 4]
    assert stopper.reasons == {} and not stopper.stop_all()
    rows = ledger.entries("spoilt")
    assert list(rows["status"]) == ["complete", "complete"]

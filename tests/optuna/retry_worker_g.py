"""One worker of the heartbeat-retry test: a metered sweep on a SQLite RDBStorage with
heartbeats and RetryFailedTrialCallback, under a budget. ``hang`` reports once, reserves 100 J
more for its row (as BudgetPruner does at a report), then sleeps to be killed; ``run`` prints,
as its objective starts, the ledger as it stands then: ``AT_START {"rows": [[trial_number,
status], ...], "committed_j": J, "own_j": J}`` (own_j: the unspent part of its reservation).

Usage: python retry_worker_g.py STORAGE_URL LEDGER_URL STUDY hang|run
"""

from __future__ import annotations

import json
import sys
import time

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback

from hpsearch_budget import Budget, Cost
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import EstimateMeter
from hpsearch_budget.optuna import metered

BUDGET = Budget(energy_kwh=1.0)


def main() -> None:
    url, ledger, name, mode = sys.argv[1:5]
    storage = RDBStorage(
        url, heartbeat_interval=1, grace_period=2, failed_trial_callback=RetryFailedTrialCallback()
    )
    study = optuna.load_study(study_name=name, storage=storage)

    def objective(trial: optuna.Trial) -> float:
        if mode == "run":
            _print_ledger(ledger, name, trial.number)
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            end = time.process_time() + 0.05
            while time.process_time() < end:  # a little CPU: estimated energy > 0
                pass
            trial.report(x, step)
            if mode == "hang":
                _reserve(ledger, name, trial.number)
                time.sleep(600)  # killed here, after a checkpoint
        return x

    meter = EstimateMeter(watts_per_core=20.0)
    wrapped = metered(objective, ledger, meter, budget=BUDGET, min_checkpoint_interval_s=0)
    study.optimize(wrapped, n_trials=1)


def _reserve(url: str, study: str, number: int) -> None:
    """Reserve 100 J more for trial ``number``'s running row."""
    with Ledger(url) as ledger:
        rows = ledger.entries(study, open_only=True)
        (window,) = rows.loc[rows["trial_number"] == number, "id"]
        limits = [(Scope(study=study), BUDGET.as_cost())]
        assert ledger.try_reserve(int(window), Cost(energy_j=100.0), limits)


def _print_ledger(url: str, study: str, number: int) -> None:
    """The ledger at the retry's start: each row's status, the study's committed energy and
    the part of it that is this trial's own reservation."""
    with Ledger(url) as ledger:
        rows = ledger.entries(study)
        committed = ledger.committed(Scope(study=study)).energy_j
    own = rows[(rows["trial_number"] == number) & (rows["status"] == "running")]
    own_j = float((own["reserved_energy_j"] - own["energy_j"]).clip(lower=0).sum())
    listed = [[int(n), str(s)] for n, s in zip(rows["trial_number"], rows["status"], strict=True)]
    print("AT_START " + json.dumps({"rows": listed, "committed_j": committed, "own_j": own_j}))


if __name__ == "__main__":
    main()

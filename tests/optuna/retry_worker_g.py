"""One worker of the heartbeat-retry test: a metered sweep on a SQLite RDBStorage with
heartbeats and RetryFailedTrialCallback. ``hang`` reports once, then sleeps to be killed.

Usage: python retry_worker_g.py STORAGE_URL LEDGER_URL STUDY hang|run
"""

from __future__ import annotations

import sys
import time

import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback

from hpsearch_budget.meters import EstimateMeter
from hpsearch_budget.optuna import metered


def main() -> None:
    url, ledger, name, mode = sys.argv[1:5]
    storage = RDBStorage(
        url, heartbeat_interval=1, grace_period=2, failed_trial_callback=RetryFailedTrialCallback()
    )
    study = optuna.load_study(study_name=name, storage=storage)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(3):
            end = time.process_time() + 0.05
            while time.process_time() < end:  # a little CPU: estimated energy > 0
                pass
            trial.report(x, step)
            if mode == "hang":
                time.sleep(600)  # killed here, after a checkpoint
        return x

    meter = EstimateMeter(watts_per_core=20.0)
    study.optimize(metered(objective, ledger, meter, min_checkpoint_interval_s=0), n_trials=1)


if __name__ == "__main__":
    main()

"""One worker process of the overshoot-bound test: a budgeted sweep on a shared storage and
ledger, with an objective that burns a fixed amount of CPU per step.

Usage: python overshoot_worker_g.py STORAGE_URL LEDGER_URL STUDY BUDGET_KWH STEPS CPU_S
[MIN_CHECKPOINT_INTERVAL_S]  (default 1 s, optimize()'s)
"""

from __future__ import annotations

import sys
import time

import optuna

from hpsearch_budget import Budget
from hpsearch_budget.meters import EstimateMeter
from hpsearch_budget.optuna import optimize

WATTS = 20.0


def main() -> None:
    storage, ledger, name, budget_kwh, steps, cpu_s = sys.argv[1:7]
    min_interval_s = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
    n_steps, burn_s = int(steps), float(cpu_s)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        last, worst = 0.0, 0.0
        for step in range(n_steps):
            end = time.thread_time() + burn_s
            while time.thread_time() < end:
                pass
            trial.report(x**2 + 1.0 / (step + 1), step)
            now = trial.cost.energy_j  # type: ignore[attr-defined]
            worst, last = max(worst, now - last), now
            trial.set_user_attr("max_step_j", worst)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x**2

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=storage)
    optimize(
        study,
        objective,
        budget=Budget(energy_kwh=float(budget_kwh)),
        ledger=ledger,
        meter=EstimateMeter(scope="process", include=("cpu",), watts_per_core=WATTS),
        n_trials=200,
        checkpoint_interval_s=5.0,
        min_checkpoint_interval_s=min_interval_s,
    )


if __name__ == "__main__":
    main()

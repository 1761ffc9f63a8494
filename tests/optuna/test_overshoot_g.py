"""Overshoot bound: 4 worker processes, one Optuna storage, one ledger, one budget.

spent <= budget + one checkpoint interval of each running trial (here: one step each).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.units import j_to_kwh

WORKER = Path(__file__).with_name("overshoot_worker_g.py")
WORKERS, STEPS, CPU_S, WATTS = 4, 8, 0.03, 20.0


def _run_sweep(tmp_path: Path, ledger_url: str) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shared", storage=storage)
    budget_j = 10 * STEPS * CPU_S * WATTS  # ~10 trials' burn: every worker runs several
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [
        sys.executable,
        str(WORKER),
        storage,
        ledger_url,
        "shared",
        repr(j_to_kwh(budget_j)),
        str(STEPS),
        str(CPU_S),
    ]
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(WORKERS)
    ]
    outputs = [p.communicate(timeout=240)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, outputs

    ledger = Ledger(ledger_url)
    spent = ledger.spent(Scope(study="shared")).energy_j
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.trials
    step_j = max(t.user_attrs.get("max_step_j", 0.0) for t in trials)
    rows = ledger.entries(study="shared")
    assert (rows["status"] != "running").all()
    trial_rows = rows[rows["phase"] == "tuning"]  # each worker adds its idle between trials
    assert len(trial_rows) == len(trials) and len(trials) < WORKERS * 200  # the budget ended it
    # The bound: at most one checkpoint interval (one step) of each of the 4 running trials.
    assert spent <= budget_j + WORKERS * step_j, (spent, budget_j, step_j)
    assert spent >= 0.6 * budget_j  # and the workers used the budget rather than refusing it
    assert ledger.verify("shared").ok


@pytest.mark.slow
def test_four_processes_sqlite_ledger(tmp_path):
    _run_sweep(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.mark.slow
@pytest.mark.postgres
def test_four_processes_postgres_ledger(tmp_path, pg_url):
    _run_sweep(tmp_path, pg_url)

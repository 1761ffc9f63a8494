"""A sweep worker killed with SIGKILL mid-trial: its trial's row keeps the energy of its last
checkpoint, is reaped as ``killed`` with its reservation released, stays counted as spent,
and the next worker on the same study and ledger still keeps the budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.units import j_to_kwh

WORKER = Path(__file__).with_name("overshoot_worker_g.py")
STEPS, CPU_S, WATTS = 6, 0.1, 20.0
STEP_J = CPU_S * WATTS


def _worker(storage: str, ledger_url: str, budget_j: float) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(WORKER), storage, ledger_url, "s", repr(j_to_kwh(budget_j))]
    args += [str(STEPS), str(CPU_S), "0"]  # every report is written: a kill loses one step
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _running_with_energy(ledger: Ledger) -> bool:
    """A trial under way that has checkpointed, after two finished ones (so that it holds a
    reservation: a study's first trial has no forecast to reserve)."""
    rows = ledger.entries(study="s")
    if rows.empty or (rows["status"] == "complete").sum() < 2:
        return False
    return bool(((rows["status"] == "running") & (rows["energy_j"] > 0)).any())


@pytest.mark.slow
def test_a_killed_worker_is_reaped_counted_and_the_budget_still_holds(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    optuna.create_study(study_name="s", storage=storage)
    budget_j = 8 * STEPS * STEP_J  # about 8 trials' burn
    ledger = Ledger(ledger_url)

    first = _worker(storage, ledger_url, budget_j)
    deadline = time.monotonic() + 120
    while not _running_with_energy(ledger):  # a trial is under way and has checkpointed
        assert first.poll() is None and time.monotonic() < deadline, "worker never got going"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    orphan = ledger.entries(study="s", open_only=True)
    assert len(orphan) == 1 and orphan["status"].iloc[0] == "running"
    kept_j = float(orphan["energy_j"].iloc[0])
    assert kept_j > 0 and ledger.committed(Scope(study="s")).energy_j > 0  # still reserved
    # Silent for more than three checkpoint intervals (5 s each): reaped as killed.
    assert ledger.reap(now=datetime.now(UTC) + timedelta(minutes=1)) == 1
    rows = ledger.entries(study="s")
    killed = rows[rows["status"] == "killed"]
    assert len(killed) == 1 and float(killed["energy_j"].iloc[0]) == pytest.approx(kept_j)
    assert ledger.committed(Scope(study="s")).energy_j == 0.0  # its reservation released
    spent_before = ledger.spent(Scope(study="s")).energy_j
    assert spent_before == pytest.approx(rows["energy_j"].sum())  # the killed row counts

    second = _worker(storage, ledger_url, budget_j)
    output = second.communicate(timeout=240)[0].decode()
    assert second.returncode == 0, output
    rows = ledger.entries(study="s")
    spent = ledger.spent(Scope(study="s")).energy_j
    assert spent == pytest.approx(rows["energy_j"].sum()) and spent > spent_before
    assert (rows["status"] == "killed").sum() == 1 and not (rows["status"] == "running").any()
    # One worker, one running trial at a time: at most one step (plus the meter's own
    # overhead) beyond the budget, the killed trial's energy included.
    assert spent <= budget_j + 2 * STEP_J, (spent, budget_j)
    assert spent >= 0.6 * budget_j
    assert ledger.verify("s").ok
    # Optuna keeps the killed trial RUNNING: the summary counts it, the report says killed
    from hpsearch_budget import Budget
    from hpsearch_budget.optuna._optimize import _summary
    from hpsearch_budget.report import load_sweep

    study = optuna.load_study(study_name="s", storage=storage)
    run = _summary(study, Budget(energy_kwh=j_to_kwh(budget_j)), ledger, None)
    assert run.n_unfinished == 1 and "1 unfinished" in run.describe()
    counted = run.n_complete + run.n_pruned_budget + run.n_pruned_other + run.n_failed
    assert counted + run.n_unfinished == run.n_trials
    states = load_sweep(storage, study="s", ledger=ledger_url).trials["state"]
    assert (states == "killed").sum() == 1 and not (states == "running").any()

"""A worker killed (SIGKILL) mid-trial on a SQLite RDBStorage with heartbeats: Optuna fails
its trial and RetryFailedTrialCallback enqueues a retry, which a second worker runs. The
retry's ledger window carries the first attempt's trial_key, so the ledger report counts one
trial charged for both attempts; the dead attempt's row is closed as killed, its reservation
released, as soon as the retry starts (not 3 checkpoint intervals later)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.report import load_sweep, sweep_from_frozen
from hpsearch_budget.units import kwh_to_j

WORKER = Path(__file__).with_name("retry_worker_g.py")


def _worker(storage: str, ledger_url: str, mode: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(WORKER), storage, ledger_url, "s", mode]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def retried(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, bytes]:
    """A study whose trial 0's worker was killed and whose trial 1 retried it: the storage and
    ledger URLs and the second worker's output."""
    tmp_path = tmp_path_factory.mktemp("retry")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    ledger = Ledger(ledger_url)

    first = _worker(storage, ledger_url, "hang")
    deadline = time.monotonic() + 120
    while True:  # trial 0 has checkpointed its first report and holds its 100 J more
        rows = ledger.entries(study="s")
        if not rows.empty and ((rows["energy_j"] > 0) & (rows["reserved_energy_j"] >= 100)).any():
            break
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    time.sleep(3)  # past the grace period: the next worker fails trial 0 and runs its retry

    second = _worker(storage, ledger_url, "run")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out.decode()
    ledger.close()
    return storage, ledger_url, out


@pytest.mark.slow
def test_a_heartbeat_retry_is_one_trial_charged_for_both_attempts(
    retried: tuple[str, str, bytes],
) -> None:
    storage, ledger_url, out = retried
    ledger = Ledger(ledger_url)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0  # Optuna's own link

    rows = ledger.entries(study="s").sort_values("id")
    assert list(rows["trial_key"]) == ["s:0", "s:0"]  # the retry joins its first attempt
    assert list(rows["trial_number"]) == [0, 1]  # each row keeps its Optuna number
    dead, retry = rows.iloc[0], rows.iloc[1]
    assert dead["status"] == "killed" and retry["status"] == "complete"
    assert dead["energy_j"] > 0 and retry["energy_j"] > 0

    # As the retry's objective started (seconds after the kill; the reaper waits 90 s): the
    # dead attempt was already killed and only the retry's own reservation was committed.
    (line,) = [x for x in out.decode().splitlines() if x.startswith("AT_START ")]
    at_start = json.loads(line.removeprefix("AT_START "))
    assert at_start["rows"] == [[0, "killed"], [1, "running"]]
    assert dead["reserved_energy_j"] >= 100.0  # what it held when it died: released
    assert at_start["committed_j"] == pytest.approx(at_start["own_j"])

    sweep = load_sweep(ledger_url, direction="maximize")
    assert len(sweep.trials) == 1  # one trial, tried twice
    trial = sweep.trials.iloc[0]
    assert trial["number"] == 0 and trial["state"] == "complete"
    assert trial["value"] == pytest.approx(trials[1].value)
    assert trial["energy_j"] == pytest.approx(dead["energy_j"] + retry["energy_j"])


@pytest.mark.slow
def test_the_study_alone_counts_a_retried_trial_once(retried: tuple[str, str, bytes]) -> None:
    """Without the ledger (the trials' user attributes, as ``hpaudit report --no-ledger``) the
    retry is folded into its first attempt too, as in the ledger's report; joined with the
    ledger, the one trial is charged for both attempts' rows."""
    storage, ledger_url, _ = retried
    study = optuna.load_study(study_name="s", storage=storage)
    dead, retry = study.trials
    assert "energy_kwh" not in dead.user_attrs  # killed: only the ledger knows its energy
    from_attrs = [
        load_sweep(storage, find_ledger=False),  # the SQL reader
        sweep_from_frozen("s", study.trials, direction="maximize"),  # Optuna's own loader
    ]
    for sweep in from_attrs:
        assert len(sweep.trials) == 1
        trial = sweep.trials.iloc[0]
        assert trial["number"] == 0 and trial["state"] == "complete"
        assert trial["value"] == pytest.approx(retry.value)
        assert trial["energy_j"] == pytest.approx(kwh_to_j(retry.user_attrs["energy_kwh"]))
        assert trial["steps"] == 1 + 3  # the dead attempt's report and the retry's three
        assert any("retried after a worker died" in note for note in sweep.notes)

    rows = Ledger(ledger_url).entries(study="s")
    joined = load_sweep(storage)  # the ledger the study records
    assert len(joined.trials) == 1
    assert joined.trials.iloc[0]["energy_j"] == pytest.approx(rows["energy_j"].sum())
    assert not any("match no trial" in note for note in joined.notes)

"""Crash safety with real processes: a worker SIGKILLed mid-trial loses at most one interval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement

WORKER = textwrap.dedent(
    """
    import sys, time
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement
    url, mode = sys.argv[1], sys.argv[2]
    ledger = Ledger(url)
    done = ledger.open_window("crash", "crash:0", checkpoint_interval_s=5.0)
    ledger.finalize(done, Measurement(1.0, {"cpu": 10.0}), status="complete")
    w = ledger.open_window("crash", "crash:1", checkpoint_interval_s=5.0)
    for step in range(1, 4):
        ledger.checkpoint(w, Measurement(float(step), {"cpu": 100.0 * step}), step=step)
    print("ready", flush=True)
    if mode == "idle":  # killed between two checkpoints
        time.sleep(600)
    step = 3
    while True:  # killed in the middle of a stream of write transactions
        step += 1
        ledger.checkpoint(w, Measurement(float(step), {"cpu": 100.0 * step}), step=step)
    """
)


def _start_and_kill(url: str, mode: str, linger_s: float) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, url, mode], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(linger_s)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("mode", ["idle", "busy"])
def test_a_sigkilled_worker_keeps_its_last_checkpoint_and_is_reaped(
    ledger_url: str, mode: str
) -> None:
    _start_and_kill(ledger_url, mode, linger_s=0.05 if mode == "idle" else 0.4)
    ledger = Ledger(ledger_url)  # the file / database opens cleanly after the kill
    row = ledger.entries().set_index("trial_key").loc["crash:1"]
    if mode == "idle":
        assert (row.step, row.energy_j) == (3, 300.0)
    else:  # every committed checkpoint is whole: energy and step moved together
        assert row.step >= 3 and row.energy_j == 100.0 * row.step
    assert ledger.verify().ok
    killed_energy = float(row.energy_j)
    assert ledger.reap() == 0  # not silent long enough yet
    # Three missed 5 s intervals later (reap takes "now" so the test need not sleep).
    assert ledger.reap(now=datetime.now(UTC) + timedelta(seconds=16)) == 1
    after = ledger.entries().set_index("trial_key")
    assert after.loc["crash:1"].status == "killed"
    assert after.loc["crash:1"].energy_j == killed_energy
    assert after.loc["crash:0"].status == "complete"  # nothing else lost
    assert ledger.spent().energy_j == pytest.approx(10.0 + killed_energy)  # still counts
    assert ledger.verify().ok and ledger.verify().rows == 2
    # A later worker goes on appending to the same chain.
    w = ledger.open_window("crash", "crash:2")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")
    assert ledger.verify().ok

"""Tuner.restore: a crashed experiment resumed keeps exact accounting, nothing counted twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray import tune

from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.ray import LedgerCallback, metered

pytestmark = pytest.mark.ray

STEPS = 5
STEP_J = 3.0


class CrashAfter(tune.Callback):
    """The driver dies after ``n`` results, while the flag file exists."""

    def __init__(self, n: int, flag: Path) -> None:
        self.n, self.flag, self.seen = n, flag, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.seen += 1
        if self.flag.exists() and self.seen >= self.n:
            raise RuntimeError("driver crashed")


def test_restored_experiment_keeps_exact_accounting(
    ray_local, trace, sqlite_url, tmp_path, make_run_config
):
    ledger = Ledger(sqlite_url)

    def train(config):
        for step in range(STEPS):
            trace.burn(STEP_J * config["w"])
            tune.report({"loss": 1.0 / (step + 1)})

    flag = tmp_path / "crash"
    flag.write_text("1")
    tuner = tune.Tuner(
        metered(train, ledger, meter=trace.meter),
        param_space={"w": tune.grid_search([1.0, 2.0, 3.0])},
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=make_run_config(
            "restore", callbacks=[LedgerCallback(ledger), CrashAfter(4, flag)]
        ),
    )
    with pytest.raises(Exception, match="driver crashed"):
        tuner.fit()
    first = ledger.entries("restore")
    assert 1 <= len(first) <= 3 and (first["status"] == "running").sum() == 0
    assert ledger.spent(Scope(study="restore")).energy_j == pytest.approx(trace.total())

    # A worker of the crashed run that died without finalising leaves a running window.
    unfinished = [k.split(":", 1)[1] for k in first.loc[first["status"] != "complete", "trial_key"]]
    assert unfinished
    orphan = ledger.open_window("restore", f"restore:{unfinished[0]}")
    ledger.checkpoint(orphan, Measurement(1.0, {"replay": 7.0}, {"replay": Source.REPLAYED}))

    flag.unlink()
    path = str(tmp_path / "ray_results" / "restore")
    grid = tune.Tuner.restore(
        path, trainable=metered(train, ledger, meter=trace.meter), resume_unfinished=True
    ).fit()
    assert not grid.errors and len(grid) == 3

    rows = ledger.entries("restore")
    orphan_row = rows[rows["id"] == orphan].iloc[0]
    assert orphan_row["status"] == "killed" and orphan_row["energy_j"] == 7.0  # charged once
    assert (rows["status"] == "running").sum() == 0
    assert (rows["status"] == "complete").sum() == 3  # each trial completed exactly once
    # Every joule burnt is in exactly one window: no more (double count), no less (lost).
    assert rows["energy_j"].sum() == pytest.approx(trace.total() + 7.0)
    assert ledger.verify("restore").ok

    # result.json: per window the last energy_j is that window's total when it completed; a
    # window cut by the crash may have charged one more report than the driver ever logged.
    last_per_window: dict[int, float] = {}
    for result_file in Path(path).glob("*/result.json"):
        for line in result_file.read_text().splitlines():
            r = json.loads(line)
            last_per_window[r["hpaudit_window"]] = r["energy_j"]
    assert len(last_per_window) >= 4  # the three trials' windows, and at least one cut one
    for window, energy in last_per_window.items():
        row = rows[rows["id"] == window].iloc[0]
        if row["status"] == "complete":
            assert row["energy_j"] == pytest.approx(energy)
        else:
            assert energy <= row["energy_j"] <= energy + STEP_J * 3.0

"""A trial that Ray restarts from a checkpoint (a retry, a restore, a PBT exploit) opens a new
ledger window: its fate, its cost in a folder report and its value must span all of them."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.ray import LedgerCallback, metered
from hpsearch_budget.report import load_sweep

pytestmark = pytest.mark.ray

STEPS = 4  # Tune stops the trial here (stop criteria), before the function returns
STEP_J = 1.0


def _train(trace: Any, flag: Path) -> Any:
    def train(config: dict) -> None:
        step = 0
        checkpoint = tune.get_checkpoint()
        if checkpoint:
            with checkpoint.as_directory() as folder:
                step = json.loads((Path(folder) / "s.json").read_text())["step"]
        while step < 10:
            step += 1
            trace.burn(STEP_J)
            if step == 3 and not flag.exists():  # the first attempt fails once, at step 3
                flag.write_text("failed")
                raise RuntimeError("diverged")
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "s.json").write_text(json.dumps({"step": step}))
                saved = tune.Checkpoint.from_directory(folder)
                tune.report({"loss": 1.0 / step}, checkpoint=saved)

    return train


@pytest.fixture(scope="module")
def retried(ray_local, module_trace, tmp_path_factory) -> tuple[Ledger, Path]:
    """One trial: fails at step 3, retried from its step-2 checkpoint, stopped by Tune at 4."""
    base = tmp_path_factory.mktemp("retried")
    ledger = Ledger(f"sqlite:///{base / 'ledger.db'}")
    grid = tune.Tuner(
        metered(
            _train(module_trace, base / "flag"),
            ledger,
            meter=module_trace.meter,
            metric="loss",
            max_steps=STEPS,
        ),
        run_config=tune.RunConfig(
            name="retried",
            storage_path=str(base / "ray_results"),
            verbose=0,
            stop={"training_iteration": STEPS},
            callbacks=[LedgerCallback(ledger)],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    ).fit()
    assert not grid.errors and grid[0].metrics["training_iteration"] == STEPS
    return ledger, Path(grid.experiment_path)


def test_a_trial_restored_from_a_checkpoint_counts_its_earlier_reports_for_max_steps(
    retried, module_trace
):
    ledger, _ = retried
    rows = ledger.entries("retried")
    # The retry reported steps 3 and 4 only, but the trial reached max_steps: complete.
    assert rows["status"].tolist() == ["failed", "complete"]
    assert rows["energy_j"].tolist() == [3.0, 2.0]  # the failing step is charged to attempt 1
    assert rows["energy_j"].sum() == module_trace.total() == 5.0


def test_a_folder_report_sums_the_windows_and_keeps_a_recovered_trial_complete(retried):
    _, folder = retried
    # The folder alone (its results name the ledger; not joined here).
    sweep = load_sweep(str(folder), direction="minimize", find_ledger=False)
    assert len(sweep.trials) == 1
    trial = sweep.trials.iloc[0]
    # Tune saved the trial TERMINATED: its error file is from the attempt it recovered from.
    assert trial["state"] == "complete"
    # Each window's last reported figure (2 J + 2 J), not the last window's alone (2 J); the
    # joule of the failing step came after attempt 1's last report (the ledger holds it).
    assert trial["energy_j"] == pytest.approx(4.0 * STEP_J)


def test_a_trial_whose_last_window_reported_nothing_keeps_its_last_value(sqlite_url):
    # PBT (or a restore) can resume a trial at its last step: the function only returns, and
    # that window, the trial's last, has no value of its own.
    ledger = Ledger(sqlite_url)
    m = Measurement(1.0, {"replay": 2.0}, {"replay": Source.REPLAYED})
    first = ledger.open_window("pbt", "pbt:a_00000", trial_number=0)
    ledger.checkpoint(first, m, step=1, value=0.25)
    ledger.finalize(first, m, status="pruned", value=0.25)
    last = ledger.open_window("pbt", "pbt:a_00000", trial_number=0)
    ledger.finalize(last, Measurement(0.1, {"replay": 0.0}, {}), status="complete")
    sweep = load_sweep(sqlite_url, study="pbt", direction="minimize")
    trial = sweep.trials.iloc[0]
    assert len(sweep.trials) == 1 and trial["state"] == "complete"
    assert trial["value"] == 0.25 and trial["energy_j"] == 2.0

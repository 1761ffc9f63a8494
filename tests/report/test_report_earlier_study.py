"""A study created again under a name the ledger already holds (a study file deleted and the
script run again, on the same ledger): the sweep warns at its trial 0, and the report of the
new study charges its own windows only."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pytest

from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import ReplayMeter
from hpsearch_budget.optuna import metered, optimize
from hpsearch_budget.report import load_sweep

WATTS = 20.0


def _run(storage: str, ledger: str, n: int, work_s: float, **kwargs: object) -> None:
    meter = ReplayMeter(power_w=WATTS)

    def objective(trial: optuna.Trial) -> float:
        meter.advance(work_s)
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    study = optuna.create_study(study_name="again", storage=storage)
    optimize(study, objective, budget=Budget(energy_kwh=1.0), ledger=ledger, meter=meter,
             n_trials=n, **kwargs)  # fmt: skip


@pytest.fixture
def two_studies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    """Study 'again' run twice on one ledger: 5 trials of 1 s, then (its storage deleted) 3
    trials of 2 s in a new storage."""
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    _run(f"sqlite:///{tmp_path / 'first.db'}", ledger, 5, 1.0)
    (tmp_path / "first.db").unlink()
    with caplog.at_level(logging.WARNING):
        _run(f"sqlite:///{tmp_path / 'second.db'}", ledger, 3, 2.0)
    return f"sqlite:///{tmp_path / 'second.db'}", ledger


def test_a_fresh_study_under_a_known_name_is_warned_about(
    two_studies: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    records = caplog.get_records("setup")  # the sweeps ran in the fixture
    warned = [r.getMessage() for r in records if "earlier study named" in r.getMessage()]
    assert len(warned) == 1  # at trial 0 only
    assert "holds 5 trial window(s)" in warned[0] and "'again'" in warned[0]


def test_its_report_charges_its_own_windows_only(two_studies: tuple[str, str]) -> None:
    storage, ledger = two_studies
    sweep = load_sweep(storage, ledger=ledger)
    assert len(sweep.trials) == 3
    assert sweep.trials["energy_j"].tolist() == pytest.approx([2.0 * WATTS] * 3)
    assert any("5 trial window(s)" in n and "earlier study" in n for n in sweep.notes)
    # The ledger itself still holds both studies' windows.
    rows = Ledger(ledger).entries(study="again")
    assert (rows["phase"] == "tuning").sum() == 8


def test_a_resumed_study_is_neither_warned_about_nor_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage, ledger = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    _run(storage, ledger, 2, 1.0)
    with caplog.at_level(logging.WARNING):
        optuna.load_study(study_name="again", storage=storage)
        _run_resumed(storage, ledger)
    assert not [r for r in caplog.records if "earlier study named" in r.getMessage()]
    sweep = load_sweep(storage, ledger=ledger)
    assert len(sweep.trials) == 4 and not any("earlier study" in n for n in sweep.notes)
    assert sweep.trials["energy_j"].sum() == pytest.approx(4 * WATTS)


def _run_resumed(storage: str, ledger: str) -> None:
    meter = ReplayMeter(power_w=WATTS)

    def objective(trial: optuna.Trial) -> float:
        meter.advance(1.0)
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    study = optuna.load_study(study_name="again", storage=storage)
    optimize(study, objective, budget=Budget(energy_kwh=1.0), ledger=ledger, meter=meter,
             n_trials=2)  # fmt: skip


def test_trials_of_the_same_study_that_run_before_its_trial_0_are_no_earlier_study(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch of asked trials run out of order (as threads with n_jobs > 1 or other workers
    may): trial 1's window is in the ledger before trial 0 starts, and it is the same study."""
    meter = ReplayMeter(power_w=WATTS)

    def objective(trial: optuna.Trial) -> float:
        meter.advance(1.0)
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    study = optuna.create_study(study_name="again")
    run = metered(objective, ledger, meter)
    first, second = study.ask(), study.ask()
    with caplog.at_level(logging.WARNING):
        for trial in (second, first):
            study.tell(trial, run(trial))
    assert not [r for r in caplog.records if "earlier study named" in r.getMessage()]
    assert len(ledger.entries(study="again")) == 2


def test_an_earlier_study_is_told_apart_from_this_ones_early_trials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The earlier study's 2 windows are counted; this study's trial 1, run first, is not."""
    meter = ReplayMeter(power_w=WATTS)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    run = metered(lambda t: meter.advance(1.0), ledger, meter)
    optuna.create_study(study_name="again").optimize(run, n_trials=2)
    study = optuna.create_study(study_name="again")
    first, second = study.ask(), study.ask()
    with caplog.at_level(logging.WARNING):
        for trial in (second, first):
            study.tell(trial, run(trial))
    warned = [r.getMessage() for r in caplog.records if "earlier study named" in r.getMessage()]
    assert len(warned) == 1 and "holds 2 trial window(s)" in warned[0]

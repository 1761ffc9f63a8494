"""Importance on the search spaces real studies have: conditional parameters, a range changed
between trials. Real Optuna storages (SQLite and a journal file), real sweeps."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from hpsearch_budget.report import build_report, load_sweep, render

from .conftest import run_cli


def _conditional(trial: optuna.Trial, *, widen_drop_at: int | None = None) -> float:
    """An objective that depends on x only, over a space with conditional parameters and,
    with ``widen_drop_at``, a range changed from that trial on (Optuna warns and allows it)."""
    x = trial.suggest_float("x", 0.0, 1.0)
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    trial.suggest_float("momentum" if optimizer == "sgd" else "beta1", 0.0, 1.0)
    wide = widen_drop_at is not None and trial.number >= widen_drop_at
    trial.suggest_float("drop", 0.0, 0.9 if wide else 0.5)
    return 10 * (x - 0.3) ** 2


def _study(storage: str | optuna.storages.BaseStorage, name: str, n: int, **kw: int) -> None:
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    with warnings.catch_warnings():  # Optuna warns of the changed range
        warnings.simplefilter("ignore")
        study.optimize(lambda t: _conditional(t, **kw), n_trials=n)


def test_a_range_changed_between_trials_is_one_parameter(tmp_path: Path) -> None:
    # drop's range went from [0, 0.5] to [0, 0.9] at trial 10. Each range was taken for a
    # condition of its own, and PED-ANOVA ranked drop, which the objective ignores, second at
    # 0.25; fANOVA refused the study ("dynamic search spaces").
    storage = f"sqlite:///{tmp_path / 's.db'}"
    _study(storage, "s", 60, widen_drop_at=10)
    sweep = load_sweep(storage)
    ped = build_report(sweep).sensitivity[0].importances
    assert next(iter(ped)) == "x" and ped["x"] > 0.85
    assert ped["drop"] < 0.05
    fanova = build_report(sweep, evaluator="fanova").sensitivity[0]
    assert next(iter(fanova.importances)) == "x" and "drop" in fanova.importances


def test_fanova_on_a_conditional_search_space_leaves_out_what_it_cannot_assess(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # momentum / beta1 exist only in the sgd / adam trials: fANOVA raised ValueError and
    # `hpaudit report --evaluator fanova` ended in a traceback.
    journal = tmp_path / "cond.log"
    _study(JournalStorage(JournalFileBackend(str(journal))), "cond", 24)
    code, out, err = run_cli(
        capsys, "report", str(journal), "--evaluator", "fanova", "--format", "json"
    )
    assert code == 0, err
    imp = json.loads(out)["sensitivity"][0]
    assert set(imp["importances"]) == {"x", "optimizer", "drop"}
    assert max(imp["importances"], key=imp["importances"].get) == "x"
    assert "beta1, momentum (set in some trials only) left out" in imp["note"]
    code, md, _ = run_cli(capsys, "report", str(journal), "--evaluator", "fanova", "--format", "md")
    assert code == 0 and "--evaluator ped-anova assesses them" in md


def test_importance_for_estimated_energy_is_labelled_an_estimate(
    study_db: tuple[str, str],
) -> None:
    # Ranked by estimated energy, the importance for energy is an estimate too; its table
    # and figure said only "Importance for energy (ped-anova ...)".
    storage, ledger = study_db
    estimated = build_report(load_sweep(storage, find_ledger=False))  # energy_source estimated
    assert estimated.study.energy_sources == {"estimated": 24}
    for fmt in ("text", "md", "html"):
        out = render(estimated, fmt)
        assert "Importance for energy (estimate) (ped-anova" in out, fmt
        assert "Importance for objective (ped-anova" in out, fmt
    # Measured energy (the ledger's gpu:0 counter) is not called an estimate.
    measured = build_report(load_sweep(storage, ledger=ledger))
    assert measured.study.energy_sources == {"measured": 24}
    assert "Importance for energy (ped-anova" in render(measured, "html")

"""End to end with the real Optuna integration: user attributes and ledger rows agree."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.cli import main
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.optuna import metered
from hpsearch_budget.report import load_sweep


def test_metered_study_reports_the_same_energy_from_attrs_and_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(ledger_url)
    study = optuna.create_study(study_name="e2e", storage=storage)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1, 1)
        sum(i * i for i in range(20_000))  # some CPU work to meter
        return x * x

    study.optimize(metered(objective, ledger), n_trials=5)
    ledger.close()
    from_ledger = load_sweep(storage, ledger=ledger_url)
    from_attrs = load_sweep(storage, find_ledger=False)  # not the ledger the study records
    assert from_ledger.trials["energy_j"].gt(0).all()
    assert from_ledger.trials["energy_j"].to_list() == pytest.approx(
        from_attrs.trials["energy_j"].to_list(), rel=1e-9
    )
    assert from_ledger.trials["co2e_g"].to_list() == pytest.approx(
        from_attrs.trials["co2e_g"].to_list(), rel=1e-9
    )
    main_args = ["report", storage, "--ledger", ledger_url, "--format", "json"]
    with pytest.raises(SystemExit) as exit_:
        main(main_args)
    assert exit_.value.code in (0, None)
    doc = json.loads(capsys.readouterr().out)
    assert doc["study"]["energy_sources"] == {"estimated": 5}
    assert doc["rnd"]["phases"][0]["estimated_share"] == pytest.approx(1.0)

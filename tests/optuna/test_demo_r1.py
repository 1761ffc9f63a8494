"""Review R1 regression: the demo refuses a non-positive --epochs instead of ignoring it."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch_budget.demo import main


@pytest.mark.parametrize("epochs", ["0", "-3"])
def test_demo_rejects_bad_epochs_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], epochs: str
) -> None:
    folder = tmp_path / "demo"
    with pytest.raises(SystemExit) as exc:
        main(["--epochs", epochs, "--folder", str(folder), "--no-report"])
    assert exc.value.code == 2
    assert "--epochs must be >= 1" in capsys.readouterr().err
    assert not folder.exists()


@pytest.mark.parametrize("n_trials", [0, -1, 2.5, True])
def test_optimize_refuses_a_bad_n_trials_before_writing(tmp_path, n_trials) -> None:
    import optuna

    from hpsearch_budget import Budget
    from hpsearch_budget.errors import HpauditInputError
    from hpsearch_budget.optuna import optimize

    ledger = tmp_path / "ledger.db"
    with pytest.raises(HpauditInputError, match="n_trials must be a positive integer"):
        optimize(optuna.create_study(), lambda t: 0.0, budget=Budget(energy_kwh=1.0),
                 ledger=f"sqlite:///{ledger}", n_trials=n_trials, policy=False)  # fmt: skip
    assert not ledger.exists()

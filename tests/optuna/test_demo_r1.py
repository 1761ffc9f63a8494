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
    err = capsys.readouterr().err
    assert "--epochs must be >= 1" in err and err.count("\n") == 1  # one line, no usage block
    assert not folder.exists()


def test_demo_never_deletes_databases_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    folder = tmp_path / "project"
    storage = f"sqlite:///{folder / 'study.db'}"
    folder.mkdir()
    optuna.create_study(study_name="precious", storage=storage)
    before = (folder / "study.db").read_bytes()
    assert main(["--quick", "--no-report", "--folder", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "study.db" in err and "another --folder" in err and err.count("\n") == 1
    assert (folder / "study.db").read_bytes() == before
    assert optuna.study.get_all_study_names(storage) == ["precious"]


def test_demo_folder_that_is_a_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "afile"
    target.write_text("mine")
    assert main(["--quick", "--no-report", "--folder", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1
    assert target.read_text() == "mine"


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


def test_demo_clears_its_own_earlier_run(tmp_path: Path) -> None:
    from hpsearch_budget.demo import MARKER, fresh_folder

    folder = tmp_path / "demo"
    fresh_folder(folder)  # a first run creates the folder and marks it
    assert (folder / MARKER).exists()
    for name in ("study.db", "ledger.db", "ledger.db-wal"):
        (folder / name).write_text("earlier run")
    (folder / "notes.txt").write_text("mine")
    fresh_folder(folder)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "notes.txt"]


def test_demo_clears_an_earlier_run_from_before_the_marker(tmp_path: Path) -> None:
    import optuna

    from hpsearch_budget.demo import STUDY, fresh_folder
    from hpsearch_budget.ledger import Ledger

    folder = tmp_path / "demo"
    folder.mkdir()
    optuna.create_study(study_name=STUDY, storage=f"sqlite:///{folder / 'study.db'}")
    Ledger(f"sqlite:///{folder / 'ledger.db'}").close()
    fresh_folder(folder)  # only the demo's study there: an old demo run, cleared
    assert not (folder / "study.db").exists() and not (folder / "ledger.db").exists()

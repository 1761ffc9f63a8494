"""Review R1 regressions: bad URLs given to ``hpaudit report`` are one-line errors (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli, write_ray_folder


@pytest.mark.parametrize("source", ["mysql://u@h/db", "foo://x"])
def test_unsupported_source_scheme_is_one_line_error(
    capsys: pytest.CaptureFixture[str], source: str
) -> None:
    code, out, err = run_cli(capsys, "report", source, "--study", "s")
    assert code == 2 and out == ""
    assert err.startswith("hpaudit: error: unsupported database URL scheme")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_ledger_is_an_error_and_not_created(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], tmp_path: Path
) -> None:
    storage, _ = study_db
    missing = tmp_path / "typo.db"
    code, out, err = run_cli(capsys, "report", storage, "--ledger", f"sqlite:///{missing}")
    assert code == 2 and out == ""
    assert err.startswith("hpaudit: error: no ledger at")
    assert not missing.exists()  # a report never creates a ledger


def test_bad_ledger_scheme_is_an_error(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str]
) -> None:
    storage, _ = study_db
    code, out, err = run_cli(capsys, "report", storage, "--ledger", "foo://x")
    assert code == 2 and out == "" and "foo" in err
    assert len(err.strip().splitlines()) == 1


def test_text_file_is_not_reported_as_an_empty_storage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "notes.log"
    junk.write_text("hello world\n")
    code, out, err = run_cli(capsys, "report", str(junk))
    assert code == 2 and out == ""
    assert "holds no Optuna study" in err and "journal" in err
    assert junk.read_text() == "hello world\n"  # left untouched


def test_report_file_has_ordinary_permissions(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], tmp_path: Path
) -> None:
    import os

    storage, ledger = study_db
    out_file = tmp_path / "report.html"
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(
            capsys, "report", storage, "--ledger", ledger, "--format", "md", "--out", str(out_file)
        )
    finally:
        os.umask(old)
    assert code == 0, err
    assert out_file.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_ray_folder_with_unknown_metric_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    exp = write_ray_folder(tmp_path, metric="val_loss")
    code, out, err = run_cli(capsys, "report", str(exp), "--metric", "val_los")
    assert code == 2 and out == ""
    assert "reported metric 'val_los'" in err and "val_loss" in err
    code, out, err = run_cli(
        capsys,
        "report",
        str(exp),
        "--metric",
        "val_loss",
        "--direction",
        "minimize",
        "--format",
        "json",
    )
    assert code == 0, err


def _one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    return err


def test_options_that_do_not_apply_to_the_source_are_errors(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], tmp_path: Path
) -> None:
    """An option the source cannot use is not silently ignored (the report would not be the
    one asked for)."""
    storage, _ = study_db
    err = _one_line_error(*run_cli(capsys, "report", storage, "--metric", "acc"))
    assert "--metric picks a Ray Tune folder's metric" in err
    # Optuna records the direction (this study minimises): a contradicting one is refused...
    err = _one_line_error(*run_cli(capsys, "report", storage, "--direction", "maximize"))
    assert "contradicts study 'sweep'" in err and "minimize" in err
    code, _, _ = run_cli(capsys, "report", storage, "--direction", "minimize")
    assert code == 0  # ...an agreeing one is fine
    exp = write_ray_folder(tmp_path)
    err = _one_line_error(
        *run_cli(capsys, "report", str(exp), "--direction", "minimize", "--study", "other")
    )
    assert "holds experiment 'exp', not 'other'" in err


def test_a_named_ledger_without_the_study_is_an_error(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], tmp_path: Path
) -> None:
    from .conftest import make_metered_study

    storage, _ = study_db
    other = f"sqlite:///{tmp_path / 'other-ledger.db'}"
    make_metered_study(f"sqlite:///{tmp_path / 'o.db'}", other, name="another", n=2)
    err = _one_line_error(*run_cli(capsys, "report", storage, "--ledger", other))
    assert err.startswith("hpaudit: error: --ledger:") and "'sweep'" in err

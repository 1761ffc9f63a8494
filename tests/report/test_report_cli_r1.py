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
    code, out, err = run_cli(capsys, "report", str(exp), "--metric", "val_loss", "--format", "json")
    assert code == 0, err

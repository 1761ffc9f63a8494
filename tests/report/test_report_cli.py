"""``hpaudit report``: every format, atomic --out, escaping, and every bad input (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.report import SCHEMA_VERSION

from .conftest import make_metered_study, run_cli, write_ray_folder


@pytest.mark.parametrize("fmt", ["text", "md", "html", "json"])
def test_each_format(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], fmt: str
) -> None:
    storage, ledger = study_db
    code, out, err = run_cli(
        capsys,
        "report",
        storage,
        "--ledger",
        ledger,
        "--format",
        fmt,
        "--seeds",
        "3",
        "--final-epochs",
        "2",
        "--region",
        "FR",
        "--gpu",
        "A100",
    )
    assert code == 0, err
    if fmt == "json":
        doc = json.loads(out)
        assert doc["schema_version"] == SCHEMA_VERSION
        assert doc["study"]["n_trials"] == 24 and doc["study"]["states"]["pruned"] == 3
        phases = {p["phase"]: p for p in doc["rnd"]["phases"]}
        assert phases["tuning"]["basis"] == "recorded"  # not "measured": these are estimates
        assert phases["seed"]["runs"] == pytest.approx(6.0)  # 3 reruns x 2 x the chosen trial
        assert doc["rnd"]["total"]["cloud_usd_low"] > 0
        assert doc["rnd"]["what_ifs"][0]["label"].startswith("at ")
        assert {s["target"] for s in doc["sensitivity"]} == {"objective", "energy"}
        assert all(s["evaluator"] == "ped-anova" for s in doc["sensitivity"])
        assert doc["variance"]["evp_without_replacement"][-1]["n"] == 21
    elif fmt == "html":
        assert out.startswith("<!DOCTYPE html>") and out.count("<svg") >= 4
        assert "<script" not in out and "http://" not in out.replace(
            'xmlns="http://www.w3.org/2000/svg"', ""
        )
    else:
        assert "R&D cost" in out and "&amp;" not in out  # Markdown shows & as written
        assert "estimate" in out and "Checklist" in out


def test_out_file_is_written_whole(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], tmp_path: Path
) -> None:
    storage, ledger = study_db
    target = tmp_path / "report.html"
    code, out, err = run_cli(
        capsys, "report", storage, "--ledger", ledger, "--format", "html", "--out", str(target)
    )
    assert code == 0 and out == "" and "wrote html" in err
    assert target.read_text().rstrip().endswith("</html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left


def _one_line_refusal(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "was left as it is; name a new file to write" in err
    return err


@pytest.mark.parametrize("target", ["study.db", "ledger.db"])
def test_out_never_replaces_the_study_or_the_ledger(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], tmp_path: Path, target: str
) -> None:
    # a copy: without the guard the shared study and ledger would be overwritten
    folder = shutil.copytree(Path(study_db[0].removeprefix("sqlite:///")).parent, tmp_path / "c")
    storage, ledger = f"sqlite:///{folder / 'study.db'}", f"sqlite:///{folder / 'ledger.db'}"
    before = (folder / target).read_bytes()
    code, out, err = run_cli(
        capsys, "report", storage, "--ledger", ledger, "--out", str(folder / target)
    )
    assert code == 2 and out == "" and "is a SQLite database" in _one_line_refusal(err)
    assert (folder / target).read_bytes() == before


def test_out_never_replaces_the_journal_it_reads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.log"
    make_metered_study(JournalStorage(JournalFileBackend(str(journal))), None, n=4)  # type: ignore[arg-type]
    before = journal.read_bytes()
    code, out, err = run_cli(capsys, "report", str(journal), "--out", str(journal))
    assert code == 2 and out == "" and "the file the report is read from" in _one_line_refusal(err)
    assert journal.read_bytes() == before


def test_user_strings_are_escaped(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    name = "<script>alert(1)</script>|x"
    study = optuna.create_study(study_name=name, storage=url)
    study.optimize(lambda t: t.suggest_categorical("c", ["<b>bold</b>", "y"]) == "y", n_trials=6)
    for fmt in ("html", "md"):
        code, out, _ = run_cli(capsys, "report", url, "--format", fmt)
        assert code == 0
        assert "<script>" not in out and "<b>bold" not in out
        assert "&lt;script&gt;" in out


def test_ray_folder_report(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    exp = write_ray_folder(tmp_path)
    code, out, err = run_cli(
        capsys, "report", str(exp), "--direction", "minimize", "--format", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["study"]["source_kind"] == "ray" and doc["study"]["n_trials"] == 6
    assert doc["rnd"]["phases"][0]["energy_kwh"] == pytest.approx(0.004 * 5 + 0.002)


def test_study_without_energy_reports_what_it_can(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_metered_study(url, None, n=5)
    code, out, _ = run_cli(capsys, "report", url)
    assert code == 0
    assert "no energy data" in out and "Importance for objective" in out
    assert "Importance for energy" not in out


def _two_studies(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    optuna.create_study(study_name="alpha", storage=url)
    optuna.create_study(study_name="beta", storage=url)
    return url


@pytest.mark.parametrize(
    "case",
    [
        "missing_study",
        "empty_study",
        "empty_ray",
        "no_such_file",
        "region_and_intensity",
        "bad_region",
        "bad_pue",
        "bad_format",
        "bad_gpu",
        "out_in_missing_folder",
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, study_db: tuple[str, str], case: str
) -> None:
    storage, _ = study_db
    args = {
        "missing_study": lambda: [_two_studies(tmp_path), "--study", "gamma"],
        "empty_study": lambda: [_two_studies(tmp_path), "--study", "alpha"],
        "empty_ray": lambda: [str(tmp_path)],
        "no_such_file": lambda: [f"sqlite:///{tmp_path / 'nope.db'}"],
        "region_and_intensity": lambda: [storage, "--region", "FR", "--g-per-kwh", "50"],
        "bad_region": lambda: [storage, "--region", "atlantis"],
        "bad_pue": lambda: [storage, "--pue", "0.5"],
        "bad_format": lambda: [storage, "--format", "pdf"],
        "bad_gpu": lambda: [storage, "--gpu", "abacus"],
        "out_in_missing_folder": lambda: [storage, "--out", str(tmp_path / "no" / "r.md")],
    }[case]()
    code, out, err = run_cli(capsys, "report", *args)
    assert code == 2 and out == ""
    assert "Traceback" not in err
    if case != "bad_format":  # typer's own usage error is several lines
        assert len(err.strip().splitlines()) == 1, err
    if case == "missing_study":
        assert "'alpha', 'beta'" in err
    if case == "empty_study":
        assert "no trials" in err


def test_fanova_on_request_and_what_if_intensity(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str]
) -> None:
    storage, ledger = study_db
    code, out, err = run_cli(
        capsys, "report", storage, "--ledger", ledger, "--format", "json",
        "--evaluator", "fanova", "--g-per-kwh", "100", "--more-trials", "0",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert {s["evaluator"] for s in doc["sensitivity"]} == {"fanova"}
    (what_if,) = doc["rnd"]["what_ifs"]
    total = doc["rnd"]["total"]
    # same facility energy (PUE unchanged), carbon at 100 g/kWh
    assert what_if["energy_kwh_pue"] == pytest.approx(total["energy_kwh_pue"])
    assert what_if["co2e_kg"] == pytest.approx(total["energy_kwh_pue"] * 0.1)

"""``hpaudit report`` checks the lab policy's ``[reporting]`` requirements (seeds, sensitivity,
variance) against what the report contains, with the policy found as sweeps find it."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.policy import Policy
from hpsearch_budget.report import build_report, load_sweep, render

from .conftest import make_metered_study, run_cli

ALL = "[reporting]\nseeds = 3\nsensitivity = true\nvariance = true\n"


def _add_runs(ledger: str, study: optuna.Study, phases: list[str]) -> None:
    """Final training / seed reruns of the best configuration, complete, as ledger windows."""
    led = Ledger(ledger)
    best = study.best_trial
    for k, phase in enumerate(phases):
        w = led.open_window(study.study_name, f"{phase}:{k}", phase=phase, params=best.params)
        m = Measurement(5.0, {"gpu:0": 2000.0}, {"gpu:0": Source.MEASURED})
        led.finalize(w, m, status="complete", value=best.values[0] + 0.01 * k)
    led.close()


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder, the working directory, with no policy from the environment."""
    monkeypatch.delenv("HPAUDIT_POLICY", raising=False)
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _study(tmp_path: Path, runs: list[str], n: int = 12) -> tuple[str, str]:
    """(storage, ledger) of a real metered study, with ``runs`` final / seed rows added."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    study = make_metered_study(storage, ledger, n=n)
    _add_runs(ledger, study, runs)
    return storage, ledger


def _report(capsys: pytest.CaptureFixture[str], storage: str, ledger: str, *args: str):  # type: ignore[no-untyped-def]
    code, out, err = run_cli(capsys, "report", storage, "--ledger", ledger, *args)
    return code, out, err


def _rows(doc: dict) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {q["key"]: (q["status"], q["detail"]) for q in doc["policy"]["requirements"]}


def test_requirements_met_each_row_ok_with_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lab: Path
) -> None:
    (lab / "hpaudit.toml").write_text(ALL)
    storage, ledger = _study(tmp_path, ["final", "seed", "seed"])
    code, out, err = _report(capsys, storage, ledger, "--format", "json", "--strict-policy")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["policy"]["file"] == str(lab / "hpaudit.toml")
    rows = {q["key"]: q for q in doc["policy"]["requirements"]}
    assert [(k, q["status"]) for k, q in rows.items()] == [
        ("seeds", "ok"),
        ("sensitivity", "ok"),
        ("variance", "ok"),
    ]
    assert (rows["seeds"]["required"], rows["seeds"]["found"]) == (3, 3)
    assert rows["seeds"]["detail"] == (
        f"the final configuration was run with 3 seeds; {lab / 'hpaudit.toml'} requires 3"
    )
    code, out, err = _report(capsys, storage, ledger)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("Lab policy: seeds"))
    assert line.split()[3] == "ok" and "hpaudit.toml requires 3" in line
    assert "and the lab policy" in out


def test_seeds_missing_counts_the_ledger_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lab: Path
) -> None:
    (lab / "hpaudit.toml").write_text("[reporting]\nseeds = 5\nvariance = true\n")
    storage, ledger = _study(tmp_path, ["final", "seed"])
    code, out, err = _report(capsys, storage, ledger, "--format", "json", "--seeds", "9")
    assert code == 0, err  # no --strict-policy: a missing requirement is shown, not an error
    rows = _rows(json.loads(out))
    assert rows["variance"][0] == "ok"  # two runs: a seed variance
    status, detail = rows["seeds"]
    assert status == "missing"  # --seeds 9 is a projection, not a run
    assert detail.startswith(
        f"the final configuration was run with 2 seeds; {lab / 'hpaudit.toml'} requires 5. "
        "Rerun the chosen configuration"
    )


def test_variance_missing_and_strict_policy_exits_1_after_writing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lab: Path
) -> None:
    (lab / "hpaudit.toml").write_text(ALL)
    storage, ledger = _study(tmp_path, [])
    target = tmp_path / "report.md"
    code, out, err = _report(
        capsys, storage, ledger, "--format", "md", "--out", str(target), "--strict-policy"
    )
    assert code == 1 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"hpaudit: error: the report misses 2 requirements of the lab policy "
        f"{lab / 'hpaudit.toml'}: seeds, variance (see its checklist)"
    )
    text = target.read_text()  # the report is written whole all the same (a CI artifact)
    assert "| Lab policy: seeds | missing | the final configuration was run with 0 seeds" in text
    assert "| Lab policy: variance | missing | seed variance is not reported" in text
    assert "| Lab policy: sensitivity | ok |" in text


def test_sensitivity_missing_with_too_few_trials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lab: Path
) -> None:
    (lab / "hpaudit.toml").write_text("[reporting]\nsensitivity = true\n")
    storage, ledger = _study(tmp_path, [], n=3)
    code, out, err = _report(capsys, storage, ledger, "--format", "json")
    assert code == 0, err
    status, detail = _rows(json.loads(out))["sensitivity"]
    assert status == "missing" and "requires it. Not computed: 3 complete trial(s)" in detail


def test_policy_in_a_parent_pyproject_is_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, lab: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (lab / "pyproject.toml").write_text("[tool.hpaudit.reporting]\nseeds = 2\n")
    (lab / "src").mkdir()
    monkeypatch.chdir(lab / "src")
    storage, ledger = _study(tmp_path, [])
    code, out, err = _report(capsys, storage, ledger, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["policy"]["file"] == str(lab / "pyproject.toml")
    assert _rows(doc)["seeds"][0] == "missing"


def test_no_policy_found_means_no_rows(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], lab: Path
) -> None:
    storage, ledger = study_db
    code, out, err = _report(capsys, storage, ledger, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["policy"] is None
    code, out, err = _report(capsys, storage, ledger)
    assert code == 0 and "Lab policy" not in out and "lab policy" not in out + err
    # CI asking for a check with no policy anywhere: a usage error, before any read
    code, out, err = _report(capsys, storage, ledger, "--strict-policy")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--strict-policy: no policy file found; create hpaudit.toml" in err


def test_no_policy_option_skips_the_check(
    capsys: pytest.CaptureFixture[str], study_db: tuple[str, str], lab: Path
) -> None:
    (lab / "hpaudit.toml").write_text(ALL)
    storage, ledger = study_db
    code, out, err = _report(capsys, storage, ledger, "--format", "json", "--no-policy")
    assert code == 0, err
    assert json.loads(out)["policy"] is None
    code, out, err = _report(capsys, storage, ledger, "--no-policy", "--policy", "hpaudit.toml")
    assert code == 2 and "give --policy or --no-policy, not both" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[reporting]\nseeds = 0\n", "hpaudit.toml: reporting.seeds: must be >= 1, got 0"),
        ("[reporting]\nseed = 5\n", "reporting.seed: unknown key 'seed'; hint: did you mean"),
        ("[reporting\n", "hpaudit.toml: not valid TOML"),
    ],
)
def test_malformed_policy_is_one_line_exit_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
    study_db: tuple[str, str],
    lab: Path,
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    (lab / "hpaudit.toml").write_text(text)
    storage, ledger = study_db
    target = tmp_path / "report.html"
    code, out, err = _report(capsys, storage, ledger, "--format", "html", "--out", str(target))
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("hpaudit: error: ")
    assert message in err
    assert not target.exists()
    # Named explicitly, from elsewhere: the same error, naming that file.
    (lab / "hpaudit.toml").rename(tmp_path / "lab.toml")
    code, _, err = _report(capsys, storage, ledger, "--policy", str(tmp_path / "lab.toml"))
    assert code == 2 and f"{tmp_path / 'lab.toml'}: " in err


def test_build_report_takes_a_policy_object_or_file(tmp_path: Path, lab: Path) -> None:
    storage, ledger = _study(tmp_path, ["final", "seed"])
    sweep = load_sweep(storage, ledger=ledger)
    assert build_report(sweep).policy is None  # the Python API checks only what it is given
    rep = build_report(sweep, policy=Policy.model_validate({"reporting": {"seeds": 2}}))
    assert rep.policy is not None and rep.policy.file is None  # built in code: no file
    assert [(q.key, q.status) for q in rep.policy.requirements] == [("seeds", "ok")]
    assert rep.policy.requirements[0].detail.endswith("; the policy requires 2")
    (tmp_path / "lab.toml").write_text("[reporting]\nvariance = true\nseeds = 4\n")
    rep = build_report(sweep, policy=tmp_path / "lab.toml")
    assert rep.policy is not None
    assert [(q.key, q.status) for q in rep.policy.requirements] == [
        ("seeds", "missing"),
        ("variance", "ok"),
    ]
    html = render(rep, "html")
    assert '<tr class="missing"><td>Lab policy: seeds</td><td>missing</td>' in html
    assert '<tr class="ok"><td>Lab policy: variance</td><td>ok</td>' in html

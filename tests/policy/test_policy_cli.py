"""``hpaudit policy check`` and ``hpaudit budget status``, end to end through the CLI."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from hpsearch_budget.cli import main
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.policy import parse_policy

POLICY = """
on_exceed = "stop"
[defaults]
g_per_kwh = 500
pue = 1.0
[caps.project]
co2e_kg = 1.0
[caps.projects.cv]
gpu_hours = 10
[caps]
user = "5 kWh"
[reporting]
seeds = 5
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("HPAUDIT_POLICY", "HPAUDIT_PROJECT", "HPAUDIT_USER", "HPAUDIT_LEDGER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_check_valid_file_prints_summary(capsys, tmp_path):
    (tmp_path / "hpaudit.toml").write_text(POLICY)
    code, out, err = run(capsys, "policy", "check")
    assert code == 0 and err == ""
    assert "hpaudit.toml: valid lab policy" in out
    assert "every project, per calendar month (UTC): 1 kg CO2e" in out
    assert "project 'cv', per calendar month (UTC): 10 GPU-h" in out
    assert "every user, per calendar month (UTC): 5 kWh" in out
    assert "on_exceed: stop" in out and "5 seeds" in out
    code, out, _ = run(capsys, "policy", "check", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["valid"] and data["caps"]["projects"]["cv"] == {"gpu_hours": 10.0}


def test_check_says_the_cloud_gpu_price_is_not_charged(capsys, tmp_path):
    """No sweep charges cloud_usd_per_gpu_hour to its ledger rows: a lab admin reading the
    summary must not believe that its USD caps include GPU rental."""
    (tmp_path / "hpaudit.toml").write_text("[defaults]\ncloud_usd_per_gpu_hour = 2.5\n")
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0 and "2.5 USD/GPU-h (cloud; not charged by sweeps)" in out


def test_check_lists_every_problem_with_path_and_hint(capsys, tmp_path):
    bad = tmp_path / "lab.toml"
    bad.write_text('on_exceed = "never"\n[caps]\nproject = 50\n[caps.user]\nco2e_kg = -1\nx = 2\n')
    code, out, err = run(capsys, "policy", "check", str(bad))
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert "Traceback" not in err
    expected = {"on_exceed", "caps.project", "caps.user.co2e_kg", "caps.user.x"}
    problem_lines = lines[:-1]
    assert {line.split(": ")[1] for line in problem_lines} == expected
    assert all(line.startswith(f"{bad}: ") and "; hint: " in line for line in problem_lines)
    assert lines[-1] == (
        f"hpaudit: error: {bad}: 4 problems; fix them and run `hpaudit policy check` again"
    )
    code, out, err = run(capsys, "policy", "check", str(bad), "--format", "json")
    data = json.loads(out)  # the same problems as data, the exit code unchanged
    assert code == 2 and data["valid"] is False and data["file"] == str(bad)
    assert {p["path"] for p in data["problems"]} == expected
    assert all(p["message"] and p["hint"] for p in data["problems"])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[caps\n", "not valid TOML"),
        ('[defaults]\nregion = "atlantis"\n', "defaults.region: unknown region 'atlantis'"),
        ("[caps.project]\nco2e = 5\n", "unknown key 'co2e'; hint: did you mean 'co2e_kg'?"),
    ],
)
def test_check_malformed_exits_2(capsys, tmp_path, text, words):
    (tmp_path / "hpaudit.toml").write_text(text)
    code, out, err = run(capsys, "policy", "check")
    assert code == 2 and out == "" and words in err


def test_hpaudit_toml_beside_pyproject_table_is_one_line_naming_both(capsys, tmp_path):
    # hpaudit.toml used to win silently: the caps in pyproject.toml did not apply
    (tmp_path / "pyproject.toml").write_text("[tool.hpaudit.caps.project]\nco2e_kg = 5\n")
    (tmp_path / "hpaudit.toml").write_text(POLICY)
    code, out, err = run(capsys, "budget", "status", "--ledger", f"sqlite:///{tmp_path}/l.db")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "hpaudit.toml" in err and "pyproject.toml" in err and "keep one" in err
    code, out, _ = run(capsys, "policy", "check", "--format", "json")
    problem = json.loads(out)["problems"][0]
    assert code == 2 and "only one policy file can apply" in problem["message"]
    (tmp_path / "hpaudit.toml").unlink()  # kept one: its caps apply
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0 and "every project, per calendar month (UTC): 5 kg CO2e" in out


def test_check_without_any_file_says_where_to_put_one(capsys):
    code, _, err = run(capsys, "policy", "check")
    assert code == 2 and "no policy file found" in err and "hpaudit.toml" in err


@pytest.fixture
def ledger_url(tmp_path, monkeypatch):
    """A ledger with rows in October and November 2026 (clock set for the test)."""
    import hpsearch_budget.ledger._ledger as ledger_module

    clock = {"t": 0.0}
    monkeypatch.setattr(ledger_module, "_now", lambda: clock["t"])
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    carbon = parse_policy(POLICY).carbon_model()
    rows = [  # (start, study, project, user, device kWh)
        (datetime(2026, 10, 31, 23, 59, tzinfo=UTC), "bert-lr", "nlp", "ana", 1.8),
        (datetime(2026, 11, 1, 0, 0, tzinfo=UTC), "bert-wd", "nlp", "ana", 0.4),
        (datetime(2026, 11, 2, 9, 0, tzinfo=UTC), "resnet", "cv", "bob", 3.0),
    ]
    with Ledger(url, carbon=carbon) as ledger:
        for i, (start, study, project, user, kwh) in enumerate(rows):
            clock["t"] = start.timestamp()
            w = ledger.open_window(study, f"{study}:{i}", project=project, user=user)
            m = Measurement(60.0, {"cpu": kwh * 3.6e6}, {"cpu": Source.ESTIMATED})
            ledger.finalize(w, m, status="complete")
    clock["t"] = datetime(2026, 11, 20, tzinfo=UTC).timestamp()
    return url


def test_budget_status_json_per_project_and_user(capsys, tmp_path, ledger_url):
    (tmp_path / "hpaudit.toml").write_text(POLICY)
    code, out, err = run(
        capsys, "budget", "status", "--ledger", ledger_url, "--format", "json", "--month", "2026-11"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["month"] == "2026-11" and data["on_exceed"] == "stop"
    caps = {c["name"]: c for c in data["caps"]}
    nlp = caps["project 'nlp' monthly CO2e cap"]
    assert math.isclose(nlp["spent"]["co2e_kg"], 0.2)  # the October row does not count
    assert math.isclose(nlp["remaining"]["co2e_kg"], 0.8) and nlp["remaining"]["usd"] is None
    assert nlp["energy_source"] == "estimated" and not nlp["exceeded"]
    cv = caps["project 'cv' monthly GPU-hours cap"]
    assert cv["limit"]["gpu_hours"] == 10.0 and cv["limit"]["co2e_kg"] is None
    bob = caps["user 'bob' monthly energy cap"]
    assert math.isclose(bob["spent"]["energy_kwh"], 3.0)
    assert math.isclose(bob["remaining"]["energy_kwh"], 2.0)
    assert {c["kind"] for c in data["caps"]} == {"project", "user"}


def test_budget_status_previous_month_and_text(capsys, tmp_path, ledger_url):
    policy = tmp_path / "lab.toml"
    policy.write_text(POLICY)
    argv = ["budget", "status", "--policy", str(policy), "--ledger", ledger_url]
    code, out, _ = run(capsys, *argv, "--month", "2026-10", "--format", "json")
    (nlp,) = [c for c in json.loads(out)["caps"] if c["who"] == "nlp"]
    assert code == 0 and math.isclose(nlp["spent"]["co2e_kg"], 0.9)
    code, out, _ = run(capsys, *argv, "--month", "2026-11", "--project", "nlp")
    assert code == 0
    assert "Budget status for 2026-11 (UTC, 2026-11-01 to 2026-12-01)" in out
    (row,) = [line for line in out.splitlines() if line.startswith("project 'nlp'")]
    cells = row.split("  ")
    cells = [c.strip() for c in cells if c.strip()]
    assert cells == [
        "project 'nlp' monthly CO2e cap",
        "kg CO2e",
        "1",
        "0.2",
        "0",
        "0.8",
        "20%",
        "estimated (not measured)",
    ]
    assert "project 'cv'" not in out and "user '" not in out


def test_budget_status_bad_input_exits_2_without_creating_a_ledger(capsys, tmp_path):
    missing = tmp_path / "nowhere.db"
    code, out, err = run(capsys, "budget", "status", "--ledger", f"sqlite:///{missing}")
    assert code == 2 and out == "" and "no ledger at" in err and not missing.exists()
    code, _, err = run(capsys, "budget", "status", "--month", "2026-13")
    assert code == 2 and "--month must be YYYY-MM" in err
    (tmp_path / "hpaudit.toml").write_text("[caps.project]\nco2e_kg = -1\n")
    code, _, err = run(capsys, "budget", "status", "--ledger", f"sqlite:///{missing}")
    assert code == 2 and "caps.project.co2e_kg: must be >= 0" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("month", ["0000-01", "9999-12"])
def test_budget_status_month_out_of_range_is_one_line(capsys, tmp_path, month):
    # both are YYYY-MM, but datetime has no year 0 and 9999-12 would end in year 10000
    policy = tmp_path / "lab.toml"
    policy.write_text(POLICY)
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(ledger).close()
    argv = ["budget", "status", "--policy", str(policy), "--ledger", ledger, "--month", month]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert f"(a UTC calendar month, 0001-01 to 9999-11), got '{month}'" in err


@pytest.mark.parametrize(
    ("on_exceed", "words"),
    [
        ("stop", "no new trial starts, running trials stop at their next report"),
        ("prune", "prune the least promising running trials that would exceed a cap"),
    ],
)
def test_check_says_what_on_exceed_does_to_running_trials(capsys, tmp_path, on_exceed, words):
    # "stop" prunes every running trial at its next report (test_policy_integration_optuna),
    # so the summary must not tell the lab that running trials finish.
    (tmp_path / "hpaudit.toml").write_text(f'on_exceed = "{on_exceed}"\n')
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0 and f"on_exceed: {on_exceed} (" in out and words in out
    assert "running ones finish" not in out


def test_check_names_hpaudit_policy_when_the_file_it_names_is_missing(
    capsys, tmp_path, monkeypatch
):
    missing = tmp_path / "lab" / "policy.toml"
    monkeypatch.setenv("HPAUDIT_POLICY", str(missing))
    code, out, err = run(capsys, "policy", "check")
    assert code == 2 and out == ""
    assert f"{missing}: no such file (named by $HPAUDIT_POLICY)" in err
    assert "fix $HPAUDIT_POLICY, or unset it" in err and "leave it out" not in err


def test_budget_status_never_writes_a_ledger_into_an_empty_postgresql_database(capsys, pg_url):
    import sqlalchemy

    code, out, err = run(capsys, "budget", "status", "--ledger", pg_url)
    assert code == 2 and out == "" and "holds no hpaudit ledger" in err
    assert len(err.strip().splitlines()) == 1
    engine = sqlalchemy.create_engine(pg_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()

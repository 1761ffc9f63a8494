"""``hpaudit report STUDY`` finds the ledger the sweep recorded (study attribute
``hpaudit_ledger``) without ``--ledger``, and falls back to the attributes, with a note, when
that ledger cannot be used."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa

from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.ledger._shareable import STUDY_ATTR, STUDY_NAME_ATTR, shareable_url
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.optuna import metered, optimize

from .conftest import make_metered_study, run_cli

ATTR_NOTE = f"ledger from the study's {STUDY_ATTR} attribute"


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1.0, 1.0)
    sum(i * i for i in range(20_000))  # some CPU work to meter
    return x * x


def _optimized(storage: str | optuna.storages.BaseStorage, ledger: str, n: int = 6) -> optuna.Study:
    study = optuna.create_study(
        study_name="mlp", storage=storage, sampler=optuna.samplers.RandomSampler(seed=3)
    )
    optimize(
        study, _objective, budget=Budget(co2e_kg=10.0), ledger=ledger, n_trials=n, policy=False
    )
    return study


def _report(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "report", *argv, "--format", "json")
    assert code == 0, err
    return dict(json.loads(out))


def _figures(doc: dict[str, Any]) -> tuple[Any, ...]:
    return doc["rnd"], doc["trials"], doc["study"]


def test_recorded_ledger_is_found_and_equals_the_ledger_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)  # a relative ledger path, as a user types it
    study = _optimized("sqlite:///study.db", "sqlite:///ledger.db")
    ledger = f"sqlite:///{run_dir / 'ledger.db'}"
    assert study.user_attrs[STUDY_ATTR] == ledger  # recorded absolute
    monkeypatch.chdir(tmp_path)  # the report runs elsewhere: a relative path would miss it
    storage = f"sqlite:///{run_dir / 'study.db'}"
    found = _report(capsys, storage)
    named = _report(capsys, storage, "--ledger", ledger)
    assert _figures(found) == _figures(named)
    assert f"{ATTR_NOTE}: {ledger}" in found["notes"]
    assert not any(STUDY_ATTR in n for n in named["notes"])  # --ledger given: no guessing
    assert found["study"]["hardware"]  # ledger rows: the host; attributes have none
    bare = _report(capsys, storage, "--no-ledger")
    assert bare["study"]["hardware"] == [] and not any(STUDY_ATTR in n for n in bare["notes"])


def test_moved_ledger_falls_back_to_the_attributes_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "run").mkdir()
    _optimized(storage, f"sqlite:///{tmp_path / 'run' / 'ledger.db'}")
    (tmp_path / "run").rename(tmp_path / "archive")  # the ledger's folder, with its WAL files
    doc = _report(capsys, storage)
    note = next(n for n in doc["notes"] if STUDY_ATTR in n)
    assert f"names sqlite:///{tmp_path / 'run' / 'ledger.db'}, which cannot be used" in note
    assert "no ledger at" in note and "pass --ledger URL" in note and "\n" not in note
    assert doc["study"]["energy_sources"] == {"estimated": 6}  # the trials' attributes
    assert doc["study"]["hardware"] == []
    assert not (tmp_path / "run").exists()  # read-only: no empty ledger made there
    again = _report(capsys, storage, "--ledger", f"sqlite:///{tmp_path / 'archive' / 'ledger.db'}")
    assert again["study"]["hardware"]


def test_recorded_ledger_without_the_study_is_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _optimized(storage, f"sqlite:///{tmp_path / 'ledger.db'}")
    (tmp_path / "ledger.db").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{tmp_path / 'ledger.db'}{suffix}").unlink(missing_ok=True)
    Ledger(f"sqlite:///{tmp_path / 'ledger.db'}").close()  # another, empty ledger there now
    doc = _report(capsys, storage)
    note = next(n for n in doc["notes"] if STUDY_ATTR in n)
    assert "cannot be used (no study 'mlp' in the ledger)" in note


def test_unreachable_recorded_server_is_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = make_metered_study(storage, None, n=4, attrs=True)
    # a sweep whose ledger server is down, or on a network this machine cannot reach
    study.set_user_attr(STUDY_ATTR, "postgresql+psycopg://ann@127.0.0.1:1/hpaudit")
    doc = _report(capsys, storage)
    note = next(n for n in doc["notes"] if STUDY_ATTR in n)
    assert "names postgresql+psycopg://ann@127.0.0.1:1/hpaudit, which cannot be used" in note
    assert "cannot reach PostgreSQL ledger" in note and "pass --ledger URL" in note
    assert doc["study"]["energy_sources"] == {"estimated": 4}


def test_ledger_option_wins_over_the_recorded_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = _optimized(storage, f"sqlite:///{tmp_path / 'ledger.db'}")
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with Ledger(other) as led:  # the same trials at 1 kWh each
        for t in study.trials:
            w = led.open_window("mlp", f"mlp:{t.number}", trial_number=t.number)
            m = Measurement(1.0, {"gpu:0": 3.6e6}, {"gpu:0": Source.MEASURED})
            led.finalize(w, m, status="complete", value=t.value)
    doc = _report(capsys, storage, "--ledger", other)
    assert doc["rnd"]["phases"][0]["energy_kwh"] == pytest.approx(6.0)
    assert not any(STUDY_ATTR in n for n in doc["notes"])


def test_study_run_without_hpsearch_budget_has_no_attribute(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = make_metered_study(storage, None, n=8, attrs=True)
    assert STUDY_ATTR not in study.user_attrs
    doc = _report(capsys, storage)
    assert doc == {**_report(capsys, storage, "--no-ledger"), "generated_at": doc["generated_at"]}
    assert not any(STUDY_ATTR in n for n in doc["notes"])
    assert doc["study"]["energy_sources"] == {"estimated": 8}


def test_no_ledger_refuses_what_cannot_be_meant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    _optimized(storage, ledger, n=2)
    for argv, says in (
        ([storage, "--ledger", ledger, "--no-ledger"], "give --ledger or --no-ledger, not both"),
        ([ledger, "--no-ledger"], "but SOURCE is a ledger: drop --no-ledger"),
    ):
        code, out, err = run_cli(capsys, "report", *argv)
        assert code == 2 and out == "" and says in err


def _attr_statements(storage: optuna.storages.RDBStorage) -> list[str]:
    """Every statement on the study attributes Optuna's storage runs from now (a read of them,
    or a write: an unchanged value still costs a read and a commit)."""
    seen: list[str] = []

    @sa.event.listens_for(storage.engine, "before_cursor_execute")
    def _count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "study_user_attributes" in statement.lower():
            seen.append(statement.lstrip().split()[0].upper())

    return seen


def test_attribute_is_checked_at_the_first_trial_only(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    rdb = optuna.storages.RDBStorage(storage)
    study = optuna.create_study(study_name="mlp", storage=rdb)
    seen = _attr_statements(rdb)
    objective = metered(_objective, ledger, policy=False)
    study.optimize(objective, n_trials=1)
    assert "INSERT" in seen
    assert study.user_attrs == {STUDY_ATTR: ledger.url, STUDY_NAME_ATTR: "mlp"}
    seen.clear()
    study.optimize(objective, n_trials=19)
    assert seen == []  # later trials neither read nor rewrite it
    ledger.close()


def _attr_writes(journal: Path) -> int:
    """How many study user attribute writes the Optuna journal file holds."""
    from optuna.storages.journal._storage import JournalOperation

    ops = [json.loads(line)["op_code"] for line in journal.read_text().splitlines()]
    return ops.count(JournalOperation.SET_STUDY_USER_ATTR)


def test_attribute_is_written_once_per_study(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.log"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    study = optuna.create_study(
        study_name="mlp", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    study.optimize(metered(_objective, ledger, policy=False), n_trials=20)
    assert _attr_writes(journal) == 2  # the ledger's URL and the study's name in it
    # another worker (objective) of the same sweep: finds them recorded, writes nothing
    study.optimize(metered(_objective, ledger, policy=False), n_trials=2)
    assert _attr_writes(journal) == 2
    moved = Ledger(f"sqlite:///{tmp_path / 'ledger2.db'}")  # a sweep moved to a new ledger
    study.optimize(metered(_objective, moved, policy=False), n_trials=2)
    assert _attr_writes(journal) == 3 and study.user_attrs[STUDY_ATTR] == moved.url
    ledger.close()
    moved.close()


def test_journal_study_finds_its_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.log"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    _optimized(JournalStorage(JournalFileBackend(str(journal))), ledger, n=3)
    doc = _report(capsys, str(journal))
    assert f"{ATTR_NOTE}: {ledger}" in doc["notes"] and doc["study"]["hardware"]


def test_shareable_url_drops_the_password_and_anchors_sqlite_paths(tmp_path: Path) -> None:
    url = "postgresql+psycopg://ann:s3cret@db-host:5432/hp?password=s3cret&sslmode=require"
    assert shareable_url(url) == "postgresql+psycopg://ann@db-host:5432/hp?sslmode=require"
    assert shareable_url("sqlite:///a/b.db") == f"sqlite:///{os.path.abspath('a/b.db')}"


def test_postgres_ledger_is_recorded_without_its_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_url: str
) -> None:
    parsed = sa.engine.make_url(pg_url)
    # The test server trusts loopback: the password is sent, never needed.
    with_password = parsed.set(password="s3cret-pw").render_as_string(hide_password=False)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = _optimized(storage, with_password, n=3)
    recorded = study.user_attrs[STUDY_ATTR]
    assert "s3cret-pw" not in json.dumps(study.user_attrs) and "***" not in recorded
    assert sa.engine.make_url(recorded).password is None
    assert recorded == shareable_url(pg_url)
    doc = _report(capsys, storage)
    assert f"{ATTR_NOTE}: {recorded}" in doc["notes"]
    assert doc["study"]["hardware"]


def test_a_copy_under_a_new_name_finds_the_ledger_rows_of_the_original(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``optuna.copy_study`` to another storage and name: the ledger knows the trials as
    'mlp', the copy is 'archived'; its report joins the ledger as the original's does."""
    storage, copy = f"sqlite:///{tmp_path / 'study.db'}", f"sqlite:///{tmp_path / 'copy.db'}"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    _optimized(storage, ledger, n=3)
    optuna.copy_study(
        from_study_name="mlp", from_storage=storage, to_storage=copy, to_study_name="archived"
    )
    original = _report(capsys, storage)
    for doc in (_report(capsys, copy), _report(capsys, copy, "--ledger", ledger)):
        assert doc["study"]["name"] == "archived" and doc["study"]["hardware"]  # ledger rows
        assert doc["rnd"] == original["rnd"]
        assert any("study 'mlp'" in n and STUDY_NAME_ATTR in n for n in doc["notes"])
    assert f"{ATTR_NOTE}: {ledger}" in _report(capsys, copy)["notes"]

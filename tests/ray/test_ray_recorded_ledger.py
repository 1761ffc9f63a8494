"""``hpaudit report <Ray Tune folder>`` finds the ledger the trials recorded (the result key
``hpaudit_ledger``) without ``--ledger``, as an Optuna study does, and falls back to the
figures in the results, with a note, when that ledger cannot be used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from hpsearch_budget.cli import main
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import ReplayMeter
from hpsearch_budget.ray import metered
from hpsearch_budget.ray._metered import LEDGER_URL_KEY, _Spec, _TrialRun

from .conftest import Trace, run_config

pytestmark = pytest.mark.ray

FOUND = f"ledger from the {LEDGER_URL_KEY} key of the trials' results"


def _report(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    try:
        main(["report", *argv, "--direction", "minimize", "--format", "json"])
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return dict(json.loads(capsys.readouterr().out))


def _figures(doc: dict[str, Any]) -> tuple[Any, ...]:
    return doc["rnd"], doc["trials"], doc["study"]


def _results(folder: Path) -> list[list[dict[str, Any]]]:
    return [
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in sorted(folder.glob("*/result.json"))
    ]


@pytest.fixture(scope="module")
def experiment(
    ray_local: Any, module_trace: Trace, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """A metered experiment (the folder, the ledger file, in a folder of its own): the 20 W trial
    returns after 2 reports, the 10 W one after 3; the ledger says both complete."""
    root = tmp_path_factory.mktemp("recorded")
    ledger = root / "run" / "ledger.db"
    ledger.parent.mkdir()
    trace = module_trace

    def train(config: dict[str, Any]) -> None:
        for step in range(3 if config["watts"] == 10.0 else 2):
            trace.burn(config["watts"])
            tune.report({"loss": config["watts"] / (step + 1)})

    tuner = tune.Tuner(
        metered(train, f"sqlite:///{ledger}", meter=trace.meter, metric="loss", policy=False),
        param_space={"watts": tune.grid_search([10.0, 20.0])},
        run_config=run_config(root, "exp"),
    )
    grid = tuner.fit()
    assert not grid.errors
    yield Path(grid.experiment_path), ledger


def test_each_window_reports_the_ledger_url_once(experiment: tuple[Path, Path]) -> None:
    folder, ledger = experiment
    for lines in _results(folder):
        assert lines[0][LEDGER_URL_KEY] == f"sqlite:///{ledger}"
        assert not any(LEDGER_URL_KEY in line for line in lines[1:])  # not in every result


def test_folder_report_joins_the_recorded_ledger(
    experiment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, ledger = experiment
    found = _report(capsys, str(folder))
    named = _report(capsys, str(folder), "--ledger", f"sqlite:///{ledger}")
    assert _figures(found) == _figures(named)
    assert f"{FOUND}: sqlite:///{ledger}" in found["notes"]
    assert not any(LEDGER_URL_KEY in n for n in named["notes"])  # --ledger given: no guessing
    # the ledger's fates: the 20 W trial stopped by itself after 2 reports, complete
    assert found["study"]["states"] == {"complete": 2}
    assert found["rnd"]["assumptions"]["pue_source"] == "as recorded"  # the ledger's PUE
    assert found["rnd"]["phases"][0]["energy_kwh"] == pytest.approx((30.0 + 40.0) / 3.6e6)


def test_no_ledger_gives_the_results_only_report(
    experiment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = experiment
    bare = _report(capsys, str(folder), "--no-ledger")
    assert not any(LEDGER_URL_KEY in n for n in bare["notes"])
    assert bare["study"]["states"] == {"complete": 1, "pruned": 1}  # read from the folder
    assert any("pass --ledger URL for the fates" in n for n in bare["notes"])
    assert bare["rnd"]["assumptions"]["pue_source"].startswith("default")  # no ledger's PUE


def test_moved_ledger_is_a_note_and_the_results_only_report(
    experiment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, ledger = experiment
    bare = _report(capsys, str(folder), "--no-ledger")
    moved = ledger.parent.with_name("archive")
    ledger.parent.rename(moved)  # the ledger's folder, with its WAL files
    try:
        doc = _report(capsys, str(folder))
        assert not ledger.parent.exists()  # read-only: no empty ledger made there
    finally:
        moved.rename(ledger.parent)
    note = next(n for n in doc["notes"] if LEDGER_URL_KEY in n)
    assert f"names sqlite:///{ledger}, which cannot be used" in note
    assert "the figures come from the trials' results" in note
    assert "pass --ledger URL" in note and "\n" not in note
    assert _figures(doc) == _figures(bare)


def test_a_postgresql_password_never_reaches_the_results(sqlite_url: str) -> None:
    """What a trial reports carries the ledger's URL without its password (in the user part or
    the query): a result file is read by anyone who reads the experiment."""
    url = "postgresql+psycopg://ana:s3cret@db.lab:5432/hpaudit?password=s3cret&sslmode=require"
    run = _TrialRun(_Spec(url, None, "s", "loss", None, None, None, "ana", 30.0))
    machine = ReplayMeter(power_w={"cpu": 5.0})
    run.ledger, run.meter = Ledger(sqlite_url), machine  # a worker's ledger, already open
    run.study = "s"
    run.state.start = machine.read()
    run.state.window = run.ledger.open_window("s", "s:t1")
    first, second = run._annotate({"loss": 1.0}), run._annotate({"loss": 0.5})
    assert first[LEDGER_URL_KEY] == ("postgresql+psycopg://ana@db.lab:5432/hpaudit?sslmode=require")
    assert LEDGER_URL_KEY not in second
    assert "s3cret" not in json.dumps([first, second])

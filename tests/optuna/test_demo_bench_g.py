"""Smoke tests: the demo (quick mode) and the overhead benchmark (quick mode) run end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pytest

from hpsearch_budget import demo
from hpsearch_budget.ledger import Ledger, Scope

REPO = Path(__file__).resolve().parents[2]


def test_demo_quick_runs_a_budgeted_sweep(tmp_path, capsys):
    assert demo.main(["--quick", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "budget" in out and "best" in out and "estimate" in out
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    spent = ledger.spent(Scope(study=demo.STUDY))
    study = optuna.load_study(study_name=demo.STUDY, storage=f"sqlite:///{tmp_path / 'study.db'}")
    rows = ledger.entries(study=demo.STUDY)
    assert spent.co2e_g > 0 and len(study.trials) == (rows["phase"] == "tuning").sum()
    assert ledger.verify(demo.STUDY).ok
    assert (tmp_path / "report.md").exists() and "hpaudit report" in out


def test_demo_bad_budget_is_a_one_line_error(tmp_path, capsys):
    assert demo.main(["--quick", "--folder", str(tmp_path), "--budget-g", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hpaudit demo: error:") and "\n" not in err
    assert not (tmp_path / "study.db").exists()  # nothing written


def test_bench_quick(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "bench_optuna_overhead_g", REPO / "experiments" / "bench_optuna_overhead.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.md"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Wall-time ratio" in text
    result = bench.run(4, 2, 0.002, 2, "random")
    assert result["budgeted_trials_run"] == 4
    # the ratio is the two arms' wall times divided, as the README figure is
    assert result["ratio_total"] == pytest.approx(result["budgeted_s"] / result["plain_s"])


@pytest.fixture(autouse=True)
def _no_leftover_module():
    yield
    sys.modules.pop("bench_optuna_overhead_g", None)

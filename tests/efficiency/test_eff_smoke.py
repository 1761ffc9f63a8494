"""Smoke runs of the experiment scripts in --quick mode (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_sweep_sim_quick(need_yahpo: None) -> None:
    out = _run("experiments/sweep_sim.py", "--quick", "--format", "json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert {r["strategy"] for r in records} == {
        "random",
        "tpe",
        "tpe_hyperband",
        "tpe_median",
        "asha",
        "ours",
    }
    for r in records:
        assert r["spent_co2e_g"] <= r["budget_co2e_g"] * 1.01
        assert r["n_trials"] >= 1 and r["curve"]


def test_sweep_sim_bad_input_exits_2() -> None:
    out = _run("experiments/sweep_sim.py", "--strategies", "nope", "--quick")
    assert out.returncode == 2
    assert out.stderr.startswith("error: unknown strategy") and "Traceback" not in out.stderr


def test_zeus_quick() -> None:
    data = REPO.parent / "shared" / "benchdata" / "zeus_nsdi23" / "summary_train.csv"
    if not data.is_file():
        pytest.skip(f"Zeus traces missing ({data})")
    out = _run("experiments/sweep_sim.py", "--quick", "--benchmark", "zeus", "--format", "json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert all(r["direction"] == "minimize" for r in records)
    assert all(r["spent_energy_j"] <= r["budget_energy_j"] * 1.01 for r in records)


def test_forecast_eval_quick(need_yahpo: None, tmp_path: Path) -> None:
    rows_json = tmp_path / "rows.json"
    out = _run("experiments/forecast_eval.py", "--quick", "--json", str(rows_json))
    assert out.returncode == 0, out.stderr
    assert "MdAPE" in out.stdout
    rows = json.loads(rows_json.read_text())
    assert {r["method"] for r in rows} == {"mean", "sweep", "model", "oracle"}

    def forecasts(method: str, n: int) -> list[float]:
        return [r["forecast_j"] for r in rows if r["method"] == method and r["n_total"] == n]

    # 3 seen trials: too few for a model of the sweep's own trials, so it is the mean; at 10
    # seen (7 parameters) `sweep` is TrialCostModel.from_sweep's forecast, not the mean's.
    assert forecasts("sweep", 30) == forecasts("mean", 30)
    assert forecasts("sweep", 100) and forecasts("sweep", 100) != forecasts("mean", 100)


def test_forecast_adaptive_quick(need_yahpo: None) -> None:
    out = _run("experiments/forecast_adaptive.py", "--quick")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| tpe", "| random"))]
    assert len(rows) == 6  # 2 samplers x 3 points of the sweep


def test_budget_efficiency_report_writes_table_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install -e '.[bench]'")

    def rec(strategy: str, seed: int, best: float) -> dict:
        return dict(
            benchmark="lcbench",
            task="1",
            budget_k=10.0,
            seed=seed,
            strategy=strategy,
            direction="maximize",
            best_value=best,
            budget_co2e_g=10.0,
            spent_co2e_g=9.9,
            overshoot_frac=-0.01,
            curve=[[2.0, best - 1], [6.0, best], [9.9, best]],
        )

    records = [
        rec(s, k, 90.0 + i)
        for i, s in enumerate(["random", "tpe", "tpe_hyperband", "tpe_median", "asha", "ours"])
        for k in range(3)
    ]
    src = tmp_path / "r.json"
    src.write_text(json.dumps(records))
    out = tmp_path / "be.md"
    res = _run("experiments/budget_efficiency_report.py", "--lcbench", str(src), "--out", str(out))
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert (
        "| 1 | 10 | 90.00 | 91.00 | 92.00 | 93.00 | 94.00 | 95.00 | asha | +1.00 | 0.20 |" in text
    )
    assert (tmp_path / "be.png").stat().st_size > 1000


def test_sweep_sim_merge_with_replaces_only_what_it_reran(need_yahpo: None, tmp_path: Path) -> None:
    key = dict(benchmark="lcbench", task="126025", budget_k=3.0, seed=0)
    stored = [
        dict(key, strategy="tpe", best_value=-1.0),
        dict(key, strategy="ours", best_value=-1.0),
    ]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(stored))
    out = _run(
        "experiments/sweep_sim.py", "--quick", "--strategies", "ours", "--format", "json",
        "--merge-with", str(old),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert [r["strategy"] for r in records] == ["tpe", "ours"]
    assert records[0]["best_value"] == -1.0  # kept as stored
    assert records[1]["best_value"] > 0 and records[1]["curve"]  # re-run
    old.write_text('{"not": "records"}')
    bad = _run("experiments/sweep_sim.py", "--quick", "--merge-with", str(old))
    assert bad.returncode == 2 and bad.stderr.startswith("error: --merge-with")

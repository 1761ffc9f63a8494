"""Smoke runs of the experiment scripts in --quick mode (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        import pytest

        pytest.skip(f"Zeus traces missing ({data})")
    out = _run("experiments/sweep_sim.py", "--quick", "--benchmark", "zeus", "--format", "json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert all(r["direction"] == "minimize" for r in records)
    assert all(r["spent_energy_j"] <= r["budget_energy_j"] * 1.01 for r in records)


def test_forecast_eval_quick(need_yahpo: None) -> None:
    out = _run("experiments/forecast_eval.py", "--quick")
    assert out.returncode == 0, out.stderr
    assert "MdAPE" in out.stdout

"""Idle windows in the report: their own R&D line ("idle between trials", an estimate when its
source is one), in the total, scaled per trial by a what-if, never counted as a trial."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import ReplayMeter
from hpsearch_budget.optuna import optimize
from hpsearch_budget.report import build_report, load_sweep, render
from hpsearch_budget.units import j_to_kwh

N = 6


def _sweep(tmp_path: Path) -> tuple[str, str]:
    """A sweep of N trials of 1 s at 20 W with 0.5 s between them: 10 J of idle each."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    meter = ReplayMeter(power_w=20.0)

    def objective(trial: optuna.Trial) -> float:
        meter.advance(1.0)
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    def between(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        meter.advance(0.5)

    study = optuna.create_study(study_name="idle", storage=storage)
    optimize(study, objective, budget=Budget(energy_kwh=1.0), ledger=ledger, meter=meter,
             n_trials=N, callbacks=[between])  # fmt: skip
    return storage, ledger


@pytest.mark.parametrize("from_ledger", [True, False])
def test_idle_is_its_own_line_in_the_total_and_never_a_trial(tmp_path, from_ledger):
    storage, ledger = _sweep(tmp_path)
    rows = Ledger(ledger).entries(study="idle")
    assert set(rows["phase"]) == {"tuning", "idle"}
    sweep = load_sweep(ledger, direction="minimize") if from_ledger else load_sweep(storage)
    rep = build_report(sweep, more_trials=N)
    assert rep.study.n_trials == N and rep.study.states == {"complete": N}
    assert len(rep.trials) == N and rep.forecast is not None and rep.forecast.n_finished == N
    idle = [p for p in rep.rnd.phases if p.phase == "idle"]
    assert [p.phase for p in rep.rnd.phases] == ["tuning", "final", "seed", "idle"]
    assert idle[0].energy_kwh == pytest.approx(j_to_kwh(N * 0.5 * 20.0), 1e-9)
    assert idle[0].runs == 0 and rep.rnd.total.runs == rep.rnd.phases[0].runs + 1  # + final
    # The total is every row the ledger holds (tuning + idle) plus the projected final run.
    final = rep.rnd.phases[1].energy_kwh
    assert rep.rnd.total.energy_kwh == pytest.approx(j_to_kwh(rows["energy_j"].sum()) + final)
    # More trials, more gaps between them: the what-if adds idle per trial.
    more = next(w for w in rep.rnd.what_ifs if "more tuning trials" in w.label)
    per_trial = (rep.rnd.phases[0].energy_kwh_pue + idle[0].energy_kwh_pue) / N
    assert more.energy_kwh_pue == pytest.approx(rep.rnd.total.energy_kwh_pue + N * per_trial)
    text = render(rep, "text")
    line = next(x for x in text.splitlines() if x.startswith("idle between trials  -"))
    assert line.endswith("estimate (100% estimated)")  # a replayed source is no measurement
    # The forecast's spent so far is the trials': it says where the idle is.
    assert "idle between trials the ledger recorded is in the R&D cost" in text
    assert "'more tuning trials' adds it" in text
    doc = json.loads(render(rep, "json"))
    assert doc["rnd"]["phases"][3]["phase"] == "idle"
    assert math.isclose(doc["rnd"]["phases"][3]["estimated_share"], 1.0)

"""Audit C regressions: studies at the edges (infinite values, ...) on real Optuna storages."""

from __future__ import annotations

from pathlib import Path

import optuna

from hpsearch_budget.report import build_report, load_sweep, render


def test_complete_trials_with_infinite_values_are_said_to_be_left_out(tmp_path: Path) -> None:
    # Optuna completes a trial that returns -inf; in a minimised study it is Optuna's best.
    storage = f"sqlite:///{tmp_path / 'inf.db'}"
    study = optuna.create_study(study_name="inf", storage=storage)
    values = [0.5, float("-inf"), 0.2, 0.9, float("inf"), 0.4]
    study.optimize(lambda t: t.suggest_float("x", 0, 1) * 0 + values[t.number], n_trials=6)
    assert study.best_trial.number == 1
    rep = build_report(load_sweep(storage))
    assert rep.study.states == {"complete": 6}
    # The report's best and statistics use the 4 finite trials: it must say so.
    spread = rep.variance.top_k_spread
    assert rep.study.best_trial == 2 and spread is not None and spread.n == 4
    note = next(n for n in rep.notes if "no finite objective value" in n)
    assert note.startswith("2 complete trial(s)")
    assert "no finite objective value" in render(rep, "md")

"""The simulator charges each trained epoch exactly and stops inside the budget."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
from sim import STRATEGIES, Benchmark, Curve, SimAccountant, load_benchmark, run_sweep
from sim._analyse import goal_rows, reach_fraction

from hpsearch_budget.budget import Budget
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.meters import Source

optuna.logging.set_verbosity(optuna.logging.WARNING)


class _Toy(Benchmark):
    """x in [0, 1]: accuracy x (1 - 1/(e+1)); epoch e costs (1 + 9x) x (1 + e % 3) J."""

    name, task, direction, max_steps = "toy", "t", "maximize", 9

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {"x": trial.suggest_float("x", 0.0, 1.0)}

    def curve(self, params: dict[str, Any], *, rng: np.random.Generator) -> Curve:
        e = np.arange(self.max_steps)
        joules = (1.0 + 9.0 * params["x"]) * (1.0 + e % 3)
        values = params["x"] * (1.0 - 1.0 / (e + 2.0)) * 100
        return Curve(joules, joules / 300.0, values, float(values[-1]))


def test_accountant_charges_exactly_on_the_simulated_clock() -> None:
    acc = SimAccountant(Budget(energy_kwh=1.0), g_per_kwh=400.0)
    acc.charge(seconds=2.0, joules=1800.0)
    acc.charge(seconds=3.0, joules=1800.0)
    assert acc.spent.energy_j == 3600.0
    assert acc.spent.co2e_g == pytest.approx(0.4)
    assert acc.spent.gpu_s == 5.0
    m = acc.measurement
    assert m.wall_s == 5.0 and m.source == Source.REPLAYED
    with pytest.raises(HpauditInputError, match="seconds >= 0"):
        acc.charge(seconds=-1.0, joules=0.0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sweep_spends_what_its_trials_cost_and_stops_at_the_budget(strategy: str) -> None:
    bench = _Toy()
    unit = bench.median_full_cost_j(n=64)
    rec = run_sweep(bench, budget_k=6, seed=3, strategy=strategy, unit_cost_j=unit)
    # Conservative forecast (costliest epoch so far) + exact charging: never over budget here.
    assert rec.spent_energy_j <= rec.budget_energy_j * (1 + 1e-12)
    # ... and it did not stop early: less than the costliest epoch is left.
    assert rec.budget_energy_j - rec.spent_energy_j < 30.0 + 1e-9
    assert rec.spent_co2e_g == pytest.approx(rec.spent_energy_j / 3.6e6 * 400.0)
    assert rec.n_trials >= 2 and rec.best_value is not None
    # The anytime curve is monotone in spend and in best value and ends at the spend.
    spend = [c for c, _ in rec.curve]
    best = [b for _, b in rec.curve]
    assert spend == sorted(spend) and best == sorted(best)
    assert spend[-1] == pytest.approx(rec.spent_co2e_g)
    assert best[-1] == rec.best_value


def test_sweeps_are_repeatable() -> None:
    bench = _Toy()
    a = run_sweep(bench, budget_k=4, seed=1, strategy="tpe_hyperband", unit_cost_j=100.0)
    b = run_sweep(bench, budget_k=4, seed=1, strategy="tpe_hyperband", unit_cost_j=100.0)
    assert a.study_name == b.study_name == "toy-t-k4-s1-tpe_hyperband"
    assert a.curve == b.curve and a.n_trials == b.n_trials


def test_goal_rows_compare_ours_with_the_best_baseline() -> None:
    def rec(strategy: str, best: float, curve: list[list[float]]) -> dict[str, Any]:
        return dict(
            task="t",
            budget_k=10.0,
            strategy=strategy,
            direction="maximize",
            best_value=best,
            budget_co2e_g=100.0,
            overshoot_frac=-0.01,
            curve=curve,
        )

    rows = goal_rows(
        [
            rec("random", 90.0, [[50, 90.0]]),
            rec("asha", 95.0, [[80, 95.0]]),
            rec("ours", 94.95, [[40, 94.95], [100, 94.95]]),
        ]
    )
    (row,) = rows
    assert row["best_baseline"] == "asha" and row["accuracy_met"]
    assert row["reach_frac"] == pytest.approx(0.4) and row["speed_met"]
    assert reach_fraction(rec("x", 1.0, [[10, 1.0]]), 95.0) == float("inf")


def test_lcbench_charges_the_running_maximum_of_surrogate_time(need_yahpo: None) -> None:
    bench = load_benchmark("lcbench", "3945", watts=300.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        t = study.ask()
        params = bench.suggest(t)
        c = bench.curve(params, rng=np.random.default_rng(0))
        assert c.n_epochs == 52 and np.all(c.epoch_s >= 0)
        assert np.allclose(c.epoch_j, 300.0 * c.epoch_s)
        raw = bench._bench.objective_function(
            [{"OpenML_task_id": "3945", **params, "epoch": e} for e in range(1, 53)]
        )
        assert c.epoch_s.sum() == pytest.approx(max(r["time"] for r in raw), rel=1e-6)
        study.tell(t, 0.0)
    with pytest.raises(HpauditInputError, match="unknown LCBench task"):
        load_benchmark("lcbench", "nope")


class _ToyTarget(_Toy):
    """Energy-to-target style: a stopped trial's value is not a result."""

    direction = "minimize"
    partial_values_count = False

    def curve(self, params: dict[str, Any], *, rng: np.random.Generator) -> Curve:
        joules = np.full(self.max_steps, 1.0 + 9.0 * params["x"])
        return Curve(joules, joules / 300.0, np.cumsum(joules), float(joules.sum()))


def test_stopped_trials_do_not_count_when_partial_values_are_not_results() -> None:
    rec = run_sweep(_ToyTarget(), budget_k=8, seed=0, strategy="asha", unit_cost_j=50.0)
    assert rec.n_pruned > 0
    # Every full trial costs at least 9 J (x = 0): a smaller "best" would be a pruned one.
    assert rec.best_value is not None and rec.best_value >= 9.0

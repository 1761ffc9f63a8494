"""One simulated sweep: a strategy searches a benchmark until the budget runs out.

Every strategy runs the same loop. Before each epoch the budget asks whether the epoch's
forecast cost still fits (the trial's own last epoch; for a first epoch, the median first epoch
seen so far); if not, the sweep stops there. The epoch is then charged exactly what it cost, so
the only overshoot is one epoch's forecast error. Baselines are carbon-unaware Optuna setups;
``ours`` is the library's cost-aware sampler and pruner.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.optuna import CostAwarePruner, CostAwareSampler
from hpsearch_budget.units import g_to_kg, j_to_kwh
from sim._bench import Benchmark
from sim._clock import SimAccountant

STRATEGIES = ("random", "tpe", "tpe_hyperband", "tpe_median", "asha", "ours")


def _make(
    strategy: str, bench: Benchmark, seed: int, budget: Budget
) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """Sampler and pruner of a strategy. Baselines keep Optuna's defaults (what users run)."""
    n = bench.max_steps
    pruner: optuna.pruners.BasePruner
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed), optuna.pruners.NopPruner()
    if strategy == "tpe_hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n)
        return optuna.samplers.TPESampler(seed=seed), pruner
    if strategy == "tpe_median":
        return optuna.samplers.TPESampler(seed=seed), optuna.pruners.MedianPruner()
    if strategy == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        return optuna.samplers.RandomSampler(seed=seed), pruner
    if strategy == "ours":
        # Rungs at 4, 12, 36 of 52 epochs: epoch 1 says little on some tasks (benchdata
        # README). Picked in pilot runs on the development tasks (first rung at 1, 2, 3, 4, 6
        # epochs tried), the same for every task.
        min_resource = max(1, round(n / 13))
        # 5 random startup trials, not TPE's 10: a budget of K=10 full trainings cannot
        # afford 10 blind ones (pilot: 10 -> 6/10 accuracy goals met, 5 -> 9/10).
        sampler = CostAwareSampler(
            budget=budget, cost_attr="co2e_kg", seed=seed, n_startup_trials=5
        )
        pruner = CostAwarePruner(min_resource=min_resource, max_resource=n, cost_attr="co2e_kg")
        return sampler, pruner
    raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")


@dataclass
class RunRecord:
    """One (task, budget_k, seed, strategy) sweep, as written to the JSON output."""

    benchmark: str
    task: str
    budget_k: float
    seed: int
    strategy: str
    study_name: str
    direction: str
    best_value: float | None
    spent_co2e_g: float
    budget_co2e_g: float
    spent_energy_j: float
    budget_energy_j: float
    overshoot_frac: float  # spent / budget - 1 (negative: under budget)
    n_trials: int
    n_complete: int
    n_pruned: int
    wall_s: float
    # Anytime curve: [co2e_g spent, best value so far] at every improvement and at the end.
    curve: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _BudgetSpent(Exception):
    pass


def run_sweep(
    bench: Benchmark,
    *,
    budget_k: float,
    seed: int,
    strategy: str,
    unit_cost_j: float,
    g_per_kwh: float = 400.0,
    max_trials: int = 100_000,
) -> RunRecord:
    """Run one sweep; ``unit_cost_j`` is the median cost of fully training one configuration."""
    acc = SimAccountant(Budget(energy_kwh=j_to_kwh(budget_k * unit_cost_j)), g_per_kwh=g_per_kwh)
    budget_co2e_g = acc.cost_of(seconds=0.0, joules=budget_k * unit_cost_j).co2e_g
    budget = Budget(co2e_kg=g_to_kg(budget_co2e_g), energy_kwh=j_to_kwh(budget_k * unit_cost_j))
    sampler, pruner = _make(strategy, bench, seed, budget)
    name = f"{bench.name}-{bench.task}-k{budget_k:g}-s{seed}-{strategy}"  # fixed: Hyperband
    study = optuna.create_study(
        study_name=name,
        direction=StudyDirection.MAXIMIZE
        if bench.direction == "maximize"
        else StudyDirection.MINIMIZE,
        sampler=sampler,
        pruner=pruner,
    )
    maximize = bench.direction == "maximize"
    first_epoch_j: list[float] = []
    curve: list[list[float]] = []
    best = [None]  # type: list[float | None]

    def note(value: float | None) -> None:
        if value is None or not math.isfinite(value):
            return
        if best[0] is None or (value > best[0] if maximize else value < best[0]):
            best[0] = value
            curve.append([acc.spent.co2e_g, value])

    objective = _objective(bench, acc, seed, first_epoch_j, note)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=max_trials, catch=(), callbacks=[_stop_when_spent])
    wall = time.perf_counter() - t0
    spent = acc.spent
    curve.append([spent.co2e_g, best[0] if best[0] is not None else float("nan")])
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return RunRecord(
        benchmark=bench.name,
        task=bench.task,
        budget_k=budget_k,
        seed=seed,
        strategy=strategy,
        study_name=name,
        direction=bench.direction,
        best_value=best[0],
        spent_co2e_g=spent.co2e_g,
        budget_co2e_g=budget_co2e_g,
        spent_energy_j=spent.energy_j,
        budget_energy_j=budget_k * unit_cost_j,
        overshoot_frac=spent.energy_j / (budget_k * unit_cost_j) - 1.0,
        n_trials=len(states),
        n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        wall_s=wall,
        curve=curve,
    )


def _stop_when_spent(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.user_attrs.get("budget_spent"):
        study.stop()


def _objective(
    bench: Benchmark,
    acc: SimAccountant,
    seed: int,
    first_epoch_j: list[float],
    note: Callable[[float | None], None],
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        params = bench.suggest(trial)
        curve = bench.curve(params, rng=np.random.default_rng([seed, trial.number]))
        spent_trial = Cost()
        profiled = bench.epoch_forecast_j(params)
        last: float | None = None
        partial = bench.partial_values_count
        for step in range(curve.n_epochs):
            # Forecast this epoch at the trial's own costliest epoch so far (first epoch: the
            # costliest first epoch seen): conservative, so overshoot needs a cost jump.
            if step > 0:
                forecast_j = float(curve.epoch_j[:step].max())
            else:
                forecast_j = max(first_epoch_j, default=0.0)
            if profiled is not None:  # the benchmark knows the epoch's cost beforehand
                forecast_j = max(forecast_j, profiled)
            if not acc.fits(acc.cost_of(seconds=0.0, joules=forecast_j)):
                trial.set_user_attr("budget_spent", True)
                note(last if partial else None)
                raise optuna.TrialPruned("budget spent")
            before = acc.spent
            acc.charge(seconds=float(curve.epoch_s[step]), joules=float(curve.epoch_j[step]))
            spent_trial = spent_trial + (acc.spent - before)
            if step == 0:
                first_epoch_j.append(float(curve.epoch_j[0]))
            trial.set_user_attr("energy_kwh", spent_trial.energy_kwh)
            trial.set_user_attr("co2e_kg", spent_trial.co2e_kg)
            last = float(curve.values[step])
            trial.report(last, step)
            if trial.should_prune():
                note(last if partial else None)
                raise optuna.TrialPruned()
        if curve.final is None:  # Zeus: target not reached in max_steps
            raise optuna.TrialPruned("target not reached")
        note(curve.final)
        return curve.final

    return objective

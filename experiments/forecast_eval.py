#!/usr/bin/env python
"""How well ``forecast_sweep`` predicts a random-search sweep's energy after 10% of its trials.

For each task, seed and sweep size N: draw N random configurations (Optuna's RandomSampler),
train each fully on the simulator (its exact energy), forecast the sweep total from the first
ceil(N/10) trials, and compare with the true total. Reports the median absolute percentage
error (MdAPE) and how often the 90% interval covers the truth, for these methods:

* ``mean``: the seen trials' mean cost x the trials left (bootstrap interval);
* ``sweep``: no history; a model of the seen trials' own cost vs parameters
  (``TrialCostModel.from_sweep``) averaged over the search space, once there are enough seen
  trials (else the mean), as ``hpaudit report`` does;
* ``model``: a :class:`~hpsearch_budget.budget.TrialCostModel` learned from earlier sweeps
  over the same search space on *other* tasks (the lab's history: ``--history-trials``
  random configurations of every LCBench task neither evaluated here nor a development
  task), averaged over Optuna's
  own draws from the study's search space; the seen trials only fix the task's scale.

    python experiments/forecast_eval.py --out experiments/results/forecast.md
    python experiments/forecast_eval.py --quick
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
from sim import load_benchmark
from sim._bench import DEV_TASKS, _yahpo_lcbench, bench_data_dir
from sim._emit import emit

from hpsearch_budget.budget import SweepForecast, TrialCostModel, forecast_sweep
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.optuna import draw_params


def history_model(benchmark: str, tasks: list[str], n: int) -> TrialCostModel:
    """The cost model of a lab that ran ``n``-trial random sweeps on ``tasks`` before."""
    sweeps = {}
    for i, task in enumerate(tasks):
        _, params, costs = load_benchmark(benchmark, task).random_configs(n, 10_000 + i)
        sweeps[task] = list(zip(params, costs, strict=True))
    return TrialCostModel.fit(sweeps)


def own_sweep_forecast(
    params: list[dict], costs: list[float], n: int, seed: int, space: list[dict]
) -> SweepForecast:
    """What ``hpaudit report`` forecasts with no earlier sweeps: a model of the seen trials'
    own cost vs parameters once there are enough of them, else their mean."""
    try:
        model = TrialCostModel.from_sweep(list(zip(params, costs, strict=True)))
    except HpauditInputError:
        return forecast_sweep(costs, n_total=n, seed=seed)
    return forecast_sweep(costs, n_total=n, seed=seed, cost_model=model, params=params, space=space)


def evaluate(
    benchmark: str,
    tasks: list[str],
    seeds: list[int],
    sizes: list[int],
    model: TrialCostModel | None = None,
    oracle_pool: int = 0,
) -> list[dict[str, float | str | int | bool]]:
    rows: list[dict[str, float | str | int | bool]] = []
    for task in tasks:
        bench = load_benchmark(benchmark, task)
        # The floor: a forecaster that knew the task's true mean cost still misses by the
        # spread of the remaining trials' sum.
        true_mean = (
            float(np.mean(bench.random_configs(oracle_pool, 99_999)[2])) if oracle_pool else 0
        )
        for seed in seeds:
            study, params, costs = bench.random_configs(max(sizes), seed)
            space = draw_params(study.trials[0].distributions, n=2000, seed=seed)
            for n in sizes:
                k = math.ceil(n / 10)
                truth = float(sum(costs[:n]))
                methods = {"mean": forecast_sweep(costs[:k], n_total=n, seed=seed)}
                methods["sweep"] = own_sweep_forecast(params[:k], costs[:k], n, seed, space)
                if model is not None:
                    methods["model"] = forecast_sweep(
                        costs[:k],
                        n_total=n,
                        seed=seed,
                        cost_model=model,
                        params=params[:k],
                        space=space,
                    )
                if oracle_pool:
                    guess = sum(costs[:k]) + (n - k) * true_mean
                    rows.append(
                        dict(task=task, seed=seed, method="oracle", n_total=n, n_seen=k,
                             truth_j=truth, forecast_j=guess, ape=abs(guess - truth) / truth)
                    )  # fmt: skip
                for method, f in methods.items():
                    rows.append(
                        dict(
                            task=task,
                            seed=seed,
                            method=method,
                            n_total=n,
                            n_seen=k,
                            truth_j=truth,
                            forecast_j=f.total.energy_j,
                            low_j=f.low.energy_j,
                            high_j=f.high.energy_j,
                            ape=abs(f.total.energy_j - truth) / truth,
                            covered=bool(f.low.energy_j <= truth <= f.high.energy_j),
                        )
                    )
    return rows


def summary(rows: list[dict[str, float | str | int | bool]]) -> str:
    sizes = sorted({int(r["n_total"]) for r in rows})
    tasks = sorted({str(r["task"]) for r in rows})
    methods = [
        m for m in ("mean", "sweep", "model", "oracle") if any(r["method"] == m for r in rows)
    ]
    lines = [
        "| method | sweep size N (seen: N/10) | "
        + " | ".join(f"MdAPE {t}" for t in tasks)
        + " | MdAPE all | 90% interval coverage |",
        "|" + "---|" * (len(tasks) + 4),
    ]
    for method in methods:
        for n in sizes:
            sel = [r for r in rows if r["n_total"] == n and r["method"] == method]
            per = [np.median([float(r["ape"]) for r in sel if r["task"] == t]) for t in tasks]
            allm = np.median([float(r["ape"]) for r in sel])
            cov = [bool(r["covered"]) for r in sel if "covered" in r]
            lines.append(
                f"| {method} | {n} | "
                + " | ".join(f"{100 * p:.1f}%" for p in per)
                + f" | **{100 * allm:.1f}%** | "
                + (f"{100 * np.mean(cov):.0f}% |" if cov else "- |")
            )
    return "\n".join(lines)


def other_tasks(benchmark: str, exclude: list[str]) -> list[str]:
    """Every LCBench task neither evaluated nor a development task: the lab's earlier sweeps."""
    if benchmark != "lcbench":
        raise SystemExit("--history needs --benchmark lcbench (Zeus has no shared search space)")
    every = _yahpo_lcbench(str(bench_data_dir() / "yahpo")).instances
    return [t for t in every if t not in set(exclude) | set(DEV_TASKS)]


NOTES = """
Estimates, from simulated sweeps (LCBench surrogate, 300 W; 10 seeds per task).

- mean: spent + trials left x the mean cost of the trials seen, with a bootstrap interval
  (uncertainty of the mean + spread of the sum of the trials left).
- sweep: no earlier sweeps; a TrialCostModel of the seen trials' own cost vs parameters
  (`TrialCostModel.from_sweep`), averaged over 2,000 draws from the study's search space,
  once the seen trials outnumber the parameters by 3 (LCBench: 7 parameters, so from 10 seen
  trials); before that, the mean. What `hpaudit report` does without --cost-history.
- oracle: spent + trials left x the task's true mean cost (of --oracle-pool random
  configurations): no forecaster from the trials seen can do better on average; its error is
  the spread of the remaining trials' sum itself, the floor under the goal.
- model: spent + trials left x the mean cost of a trial from a TrialCostModel fitted on the
  earlier sweeps (--history-trials random configurations of every other LCBench task, neither
  the tasks evaluated here nor the development tasks), averaged over 2,000 draws from the
  study's search space (`draw_params`); the seen trials set only the task's scale (with
  --history-tasks N, the earlier sweeps are N of those tasks, picked at random). Interval:
  the scale's uncertainty (model noise / sqrt(trials seen)) + the spread of the sum left.

Why the mean misses with few trials: trial energy on these tasks has a coefficient of
variation of about 0.8-1.5, so the mean of k trials is off by about CV / sqrt(k), ~30% at
k = 10. The model explains most of that spread by the hyperparameters (batch size, width,
depth), whose effect on cost carries over between tasks; what is left is the noise of the
scale (~0.3 in logs / sqrt(k)) and the spread of the remaining trials' sum itself, which no
forecast removes.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--benchmark", default="lcbench", choices=("lcbench", "zeus"))
    p.add_argument("--tasks", default=",".join(DEV_TASKS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--sizes", default="50,100,200")
    p.add_argument(
        "--history-trials",
        type=int,
        default=100,
        help="trials per earlier sweep the cost model learns from (0: no model)",
    )
    p.add_argument(
        "--history-tasks",
        type=int,
        default=0,
        help="learn from only this many of the other tasks (picked at random; 0: all of them)",
    )
    p.add_argument("--history-seed", type=int, default=0, help="which --history-tasks pick")
    p.add_argument(
        "--oracle-pool",
        type=int,
        default=1000,
        help="configurations per task whose mean cost the oracle knows (0: no oracle rows)",
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tasks, seeds, sizes = (
        a.tasks.split(","),
        list(range(a.seeds)),
        [int(s) for s in a.sizes.split(",")],
    )
    history = a.history_trials
    oracle = a.oracle_pool
    if a.quick:
        # N = 100 (10 seen, 7 parameters) is the smallest size at which the `sweep` method
        # fits its own model rather than falling back to the mean: exercise that path too.
        tasks, seeds, sizes, history = tasks[:1], [0, 1], [30, 100], min(history, 10)
        oracle = min(oracle, 20)
    earlier = other_tasks(a.benchmark, tasks) if history > 0 else []
    if a.quick or a.history_tasks:
        pick = np.random.default_rng(a.history_seed).permutation(len(earlier))[
            : 3 if a.quick else a.history_tasks
        ]
        earlier = [earlier[i] for i in sorted(pick)]
    model = history_model(a.benchmark, earlier, history) if earlier else None
    rows = evaluate(a.benchmark, tasks, seeds, sizes, model, oracle)
    emit(
        "forecast_eval.py",
        argv,
        "Sweep energy forecast after 10% of a random-search sweep (estimates)",
        summary(rows),
        rows,
        json_path=a.json,
        out=a.out,
        notes=NOTES,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""The sweep forecast under an adaptive sampler: TPE vs random search, with and without the
shift check (``forecast_sweep(shift_check=...)``).

For each task and seed, run a 200-trial sweep with Optuna's TPESampler (its defaults: 10
random startup trials) and one with its RandomSampler, every trial trained to the end on the
LCBench simulator (TPE maximises the final validation accuracy). After 10 %, 30 % and 50 % of
the trials, forecast the sweep's total energy from the finished trials, by their mean
(``shift_check=False``, the forecast before the check existed) and as ``forecast_sweep``
does by default (the later half when their cost shifted), and report the median absolute
percentage error, how often the check fired, and the later trials' cost relative to the
first ones'.

    python experiments/forecast_adaptive.py --out experiments/results/forecast_adaptive.md
    python experiments/forecast_adaptive.py --quick
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
from sim import load_benchmark
from sim._bench import DEV_TASKS
from sim._emit import emit

from hpsearch_budget.budget import cost_shifted, forecast_sweep

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}


def sweep_costs(task: str, sampler: str, n: int, seed: int) -> np.ndarray:
    """Energy of each trial of an ``n``-trial sweep, in the order the trials started."""
    bench = load_benchmark("lcbench", task)
    study = optuna.create_study(direction=bench.direction, sampler=SAMPLERS[sampler](seed=seed))
    rng = np.random.default_rng(seed)
    costs = []
    for _ in range(n):
        trial = study.ask()
        curve = bench.curve(bench.suggest(trial), rng=rng)
        costs.append(curve.total_j)
        study.tell(trial, float(curve.final if curve.final is not None else curve.values[-1]))
    return np.asarray(costs)


def evaluate(
    tasks: list[str], seeds: list[int], n: int, fractions: list[float]
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for task in tasks:
        for sampler in SAMPLERS:
            for seed in seeds:
                costs = sweep_costs(task, sampler, n, seed)
                truth = float(costs.sum())
                for frac in fractions:
                    k = max(2, round(n * frac))
                    seen = list(costs[:k])
                    row: dict[str, object] = dict(
                        task=task,
                        sampler=sampler,
                        seed=seed,
                        fraction=frac,
                        shifted=cost_shifted(seen) is not None,
                        later_vs_seen=float(costs[k:].mean() / costs[:k].mean()),
                    )
                    for name, check in (("mean", False), ("default", True)):
                        f = forecast_sweep(seen, n_total=n, seed=seed, shift_check=check)
                        row[f"ape_{name}"] = abs(f.total.energy_j / truth - 1)
                        row[f"covered_{name}"] = f.low.energy_j <= truth <= f.high.energy_j
                    rows.append(row)
    return rows


def summary(rows: list[dict[str, object]]) -> str:
    lines = [
        "| sampler | seen | MdAPE, mean of all seen | MdAPE, default (shift check) | "
        "check fired | 90% interval coverage (default) | later trials' cost / seen trials' "
        "(median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for sampler in SAMPLERS:
        for frac in sorted({float(r["fraction"]) for r in rows}):  # type: ignore[arg-type]
            sel = [r for r in rows if r["sampler"] == sampler and r["fraction"] == frac]
            if not sel:
                continue

            def col(key: str, s: list[dict[str, object]] = sel) -> np.ndarray:
                return np.array([r[key] for r in s], dtype=float)

            lines.append(
                f"| {sampler} | {frac:.0%} | {100 * np.median(col('ape_mean')):.1f}% | "
                f"**{100 * np.median(col('ape_default')):.1f}%** | "
                f"{int(col('shifted').sum())}/{len(sel)} | "
                f"{100 * col('covered_default').mean():.0f}% | "
                f"{np.median(col('later_vs_seen')):.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tasks", default=",".join(DEV_TASKS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--fractions", default="0.1,0.3,0.5")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tasks, seeds, n = a.tasks.split(","), list(range(a.seeds)), a.trials
    fractions = [float(f) for f in a.fractions.split(",")]
    if a.quick:
        tasks, seeds, n = tasks[:1], [0], 30
    rows = evaluate(tasks, seeds, n, fractions)
    emit(
        "forecast_adaptive.py",
        argv,
        "Sweep energy forecast under TPE vs random search (estimates)",
        summary(rows),
        rows,
        json_path=a.json,
        out=a.out,
        preamble=f"Tasks: {', '.join(tasks)}; {len(seeds)} seeds; {n} trials per sweep, every "
        "trial trained to the end (LCBench surrogate, 300 W).\n\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

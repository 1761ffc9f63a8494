#!/usr/bin/env python
"""How well ``forecast_sweep`` predicts a random-search sweep's energy after 10% of its trials.

For each task, seed and sweep size N: draw N random configurations (Optuna's RandomSampler),
train each fully on the simulator (its exact energy), forecast the sweep total from the first
ceil(N/10) trials, and compare with the true total. Reports the median absolute percentage
error (MdAPE) and how often the 90% interval covers the truth.

    python experiments/forecast_eval.py --out experiments/results/forecast.md
    python experiments/forecast_eval.py --quick
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna
from sim import load_benchmark
from sim._bench import DEV_TASKS

from hpsearch_budget.budget import forecast_sweep


def evaluate(
    benchmark: str, tasks: list[str], seeds: list[int], sizes: list[int]
) -> list[dict[str, float | str | int | bool]]:
    rows: list[dict[str, float | str | int | bool]] = []
    for task in tasks:
        bench = load_benchmark(benchmark, task)
        for seed in seeds:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            rng = np.random.default_rng(seed)
            costs: list[float] = []
            for _ in range(max(sizes)):
                trial = study.ask()
                costs.append(bench.curve(bench.suggest(trial), rng=rng).total_j)
                study.tell(trial, 0.0)
            for n in sizes:
                k = math.ceil(n / 10)
                f = forecast_sweep(costs[:k], n_total=n, seed=seed)
                truth = float(sum(costs[:n]))
                rows.append(
                    dict(
                        task=task,
                        seed=seed,
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
    lines = [
        "| sweep size N (seen: N/10) | "
        + " | ".join(f"MdAPE {t}" for t in tasks)
        + " | MdAPE all | 90% interval coverage |",
        "|" + "---|" * (len(tasks) + 3),
    ]
    for n in sizes:
        sel = [r for r in rows if r["n_total"] == n]
        per = [np.median([float(r["ape"]) for r in sel if r["task"] == t]) for t in tasks]
        allm = np.median([float(r["ape"]) for r in sel])
        cov = np.mean([bool(r["covered"]) for r in sel])
        lines.append(
            f"| {n} | "
            + " | ".join(f"{100 * p:.1f}%" for p in per)
            + f" | **{100 * allm:.1f}%** | {100 * cov:.0f}% |"
        )
    return "\n".join(lines)


NOTES = """
Estimates, from simulated sweeps (LCBench surrogate, 300 W; 10 seeds x 5 development tasks).
The forecast is spent + remaining trials x mean cost of the trials seen, with a bootstrap
interval (mean uncertainty + spread of the sum of the remaining trials).

Goal (MdAPE <= 10% after 10% of the trials): NOT met here: 21% at N = 100, 10.2% at
N = 200, 12.0% at N = 400 (10 seeds: noisy; 40 sweeps resampled from a 1500-configuration
pool per task gave 13.6% at 200 and 8.0% at 400). It is met only for sweeps of several
hundred trials. Energy on these tasks has a coefficient of variation (CV) of about 0.85-1.3
(a few slow configurations cost 5-10x the median), so the mean of k seen trials is off by
about CV / sqrt(k): MdAPE ~ 0.6 x CV / sqrt(k). With k = 10 (N = 100) that is ~20%;
k >= ~36 (N >= ~360) is needed for 10%. A lognormal fit or a learned cost model of the
parameters (tried: ridge on log cost, Monte Carlo over the search space) did not do better
at k = 10. The interval is honest about this: 90% coverage is 74-92% (lower for small k,
where the bootstrap underestimates skew).
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--benchmark", default="lcbench", choices=("lcbench", "zeus"))
    p.add_argument("--tasks", default=",".join(DEV_TASKS))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--sizes", default="50,100,200")
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
    if a.quick:
        tasks, seeds, sizes = tasks[:1], [0, 1], [30]
    rows = evaluate(a.benchmark, tasks, seeds, sizes)
    text = summary(rows)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    if a.out:
        cmd = "python experiments/forecast_eval.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        a.out.write_text(
            "# Sweep energy forecast after 10% of a random-search sweep (estimates)\n\n"
            f"Command: `{cmd}`\n\n{text}\n{NOTES}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

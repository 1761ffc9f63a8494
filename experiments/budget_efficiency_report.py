#!/usr/bin/env python
"""Tables and plot for the budget-efficiency results of ``sweep_sim.py``.

    python experiments/budget_efficiency_report.py \
        --lcbench experiments/results/budget_efficiency_lcbench.json \
        --zeus experiments/results/budget_efficiency_zeus.json \
        --out experiments/results/budget_efficiency.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim._analyse import goal_rows, markdown

from hpsearch_budget.units import g_to_kg

STRATS = ["random", "tpe", "tpe_hyperband", "tpe_median", "asha", "ours"]

NOTES = """## How these were made

Commands (2 worker processes on a shared 2-core machine):

    python experiments/sweep_sim.py --benchmark lcbench --budget-k 10,30 --seeds 0-4 \\
        --strategies all --format json --jobs 2 \\
        --out experiments/results/budget_efficiency_lcbench.json
    python experiments/sweep_sim.py --benchmark lcbench --tasks 7593,126026,126029 \\
        --budget-k 10,30 --seeds 0-4 --strategies all --format json --jobs 2 \\
        --out experiments/results/budget_efficiency_heldout.json
    python experiments/sweep_sim.py --benchmark zeus --budget-k 10,30 --seeds 0-4 \\
        --strategies all --format json --jobs 2 \\
        --out experiments/results/budget_efficiency_zeus.json
    python experiments/sweep_sim.py --benchmark lcbench --tasks 146212,167104,167152 \\
        --budget-k 10,30 --seeds 0-4 --strategies all --format json --jobs 1 \\
        --out experiments/results/budget_efficiency_extra.json
    python experiments/budget_efficiency_report.py --lcbench ... --heldout ... --zeus ... \\
        --extra ... --out experiments/results/budget_efficiency.md

- Budget: K x the median energy of fully training a random configuration of the task (256
  configurations, fixed seed). Every epoch is charged exactly (LCBench: running maximum of the
  surrogate's cumulative time, x 300 W). Before each epoch the budget checks the epoch's
  forecast (the trial's costliest epoch so far; for a first epoch the costliest first epoch
  seen; Zeus: the profiled epoch cost) and stops the sweep if it would not fit.
- best value: the best value of any trial, a pruned trial counting with its last reported
  accuracy (LCBench); on Zeus only trials that reached the target count.
- "reaches it at": median over seeds of the fraction of the budget spent when ours' best first
  came within 0.1 point of the best baseline's median final value (inf: not reached in the
  median seed).
- Baselines run Optuna's defaults (TPE: 10 random startup trials; Hyperband min_resource=1;
  MedianPruner defaults; ASHA = RandomSampler + SuccessiveHalvingPruner(min_resource=1, rf=3)).
  ours = CostAwareSampler(n_startup_trials=5, alpha=1, cost cooling over the budget) +
  CostAwarePruner(min_resource=4, rf=3, cost_exponent=0.5).
- Honesty: ours' two settings (first rung 4 epochs, 5 startup trials) were picked in pilot runs
  on the five development tasks (first rung 1/2/3/4/6, startup 5/10, alpha 1/2 tried), so the
  development table is optimistic; the held-out tasks (the first three non-development ids
  in YAHPO's list, picked before running) are the fairer test, and there the goals are mostly
  missed. On Zeus the search space is small (batch size x power limit) and the objective is the
  cost itself; the cost-aware search does not help there (worse than the best baseline on
  most workloads), and pruning on energy-so-far says little.

## Tried for the speed goal and not adopted (ours above is unchanged)

Only ours was re-run (`sweep_sim.py --strategies ours --merge-with <stored records>` keeps the
baselines' records), 1 process under `nice -n 15`, load average 3-6 on the 2 shared cores.

- Why K=10 misses: Optuna cannot pause a trial, so the first trials to reach a rung, ranked
  against nobody, train to the end: the first three or four random configurations took about
  a third of a K=10 budget (one of them alone 36% in a 34539 run).
- Tried on the development tasks: a warm-up (the first 3-16 trials stopped at the first rung),
  reduction factor 4 below 20 full trainings (first rung 2/3/4), a stricter few-peer rule
  (with fewer than rf peers only the best goes on, as in Optuna's SuccessiveHalvingPruner),
  more startup trials. The best (rf 4 from epoch 3 with 9 warm-up trials at K=10; rf 3 from
  epoch 4 with 9 warm-up trials at K=30; strict rule) met, on seeds 0-4, accuracy in 10/10
  development cells and speed in 6/10 (unchanged ours: 9/10 and 4/10); on seeds 5-9, 9/10 and
  5/10 (unchanged: 7/10 and 1/10).
- It did not carry over. Held-out, seeds 0-4: accuracy 0/6, speed 0/6 (unchanged: 2/6, 0/6;
  7593 K=30 fell from 82.00 to 68.55); over seeds 0-9 the share of runs within 0.1 point of
  the best baseline fell from 35% to 28% and of runs reaching it by 0.6x budget from 23% to
  15%. On three further LCBench tasks run only for this check (146212, 167104, 167152; all
  baselines run there, seeds 0-4) both met accuracy 2/6 and speed 2/6, the mean gap 0.25
  point worse (seeds 0-9). A gain on the tasks it was picked on and none elsewhere is
  over-fitting, so ours and the library are left as they were.
- A cost model of earlier sweeps as the sampler's prior (third session): the
  `TrialCostModel` that makes the forecast accurate (experiments/results/forecast.md), fitted
  on 100 random configurations of each of 23 other LCBench tasks, (a) as a cost-effective
  initial design (each startup trial the cheaper-looking of 8 random candidates, picked with
  probability proportional to predicted cost ** -alpha) and (b) in place of the per-study cost
  model in the acquisition. Development tasks, seeds 0-4: (a)+(b) accuracy 5/10, speed 4/10
  (126025 K=30 fell from 91.99 to 83.08); (a) alone 6/10 and 3/10 (unchanged ours: 9/10 and
  4/10). A better-known cost pushes the search to cheap configurations, and on these tasks
  cheap ones (large batches, narrow nets) are the worse ones: the cheap initial design also
  teaches TPE from worse points. A milder use, (c) startup trials drawn at random but never
  from the 20 % of configurations the prior predicts dearest, did no better: accuracy 5/10,
  speed 3/10. On LCBench the dear configurations are often the good ones. Not adopted; the
  prior stays a forecasting tool only.
- The other way round, a check that the sampler's own cost term earns its place: ours with
  alpha = 0 (no cost term; the cost-aware pruner kept) met accuracy 8/10 and speed 2/10
  (alpha = 1: 9/10 and 4/10), so the per-study cost term helps a little, a stronger one hurts.
- Our sampler with Optuna's `HyperbandPruner` (min_resource 1, as the tpe_hyperband baseline,
  which wins most held-out cells) in place of the cost-aware pruner (fourth session;
  development tasks, seeds 0-4): accuracy 4/10, speed 2/10 (126025 K=10 -3.59 points). Not
  analysed further (a guess: within a bracket the cost-cooled sampler sees few trials).
  Not adopted.
"""


def anytime(recs: list[dict[str, Any]], grid: np.ndarray) -> np.ndarray:
    """Median over seeds of the best value so far at each spend on ``grid`` (kg CO2e)."""
    rows = []
    for r in recs:
        xs = np.array([g_to_kg(c) for c, _ in r["curve"]])
        ys = np.array([b for _, b in r["curve"]], dtype=float)
        idx = np.searchsorted(xs, grid, side="right") - 1
        rows.append(np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan))
    arr = np.array(rows)
    out = np.full(arr.shape[1], np.nan)
    seen = ~np.any(np.isnan(arr), axis=0)  # from where every seed has a best so far
    out[seen] = np.median(arr[:, seen], axis=0)
    return out


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        groups[(r["task"], r["budget_k"])][r["strategy"]].append(r)
    keys = sorted(groups, key=lambda k: (k[1], k[0]))
    ks = sorted({k for _, k in keys})
    tasks = sorted({t for t, _ in keys})
    fig, axes = plt.subplots(len(ks), len(tasks), figsize=(3.2 * len(tasks), 2.8 * len(ks)))
    axes = np.atleast_2d(axes)
    for (task, k), strat in groups.items():
        ax = axes[ks.index(k), tasks.index(task)]
        budget_kg = g_to_kg(next(iter(strat.values()))[0]["budget_co2e_g"])
        grid = np.linspace(0, budget_kg, 200)
        for s in STRATS:
            if s in strat:
                ax.plot(grid, anytime(strat[s], grid), label=s, lw=2.2 if s == "ours" else 1.1)
        ax.set_title(f"{task}, K={k:g}", fontsize=9)
        ax.set_xlabel("kg CO2e spent (simulated)", fontsize=8)
        ax.set_ylabel("best validation value", fontsize=8)
        lo = np.nanmin([anytime(v, grid[-1:])[0] for v in strat.values()])
        hi = np.nanmax([anytime(v, grid[-1:])[0] for v in strat.values()])
        ax.set_ylim(lo - 3 * max(hi - lo, 0.2), hi + 0.5 * max(hi - lo, 0.2))
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Anytime best vs kg CO2e (median over seeds; simulated, estimated)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _task_section(title: str, rows: list[dict[str, Any]], path: Path) -> list[str]:
    """A further table of LCBench tasks with its goal counts."""
    acc = sum(bool(r.get("accuracy_met")) for r in rows)
    speed = sum(bool(r.get("speed_met")) for r in rows)
    over = max(r["max_overshoot"] for r in rows)
    return [
        "",
        f"## {title}",
        "",
        markdown(rows, STRATS),
        "",
        f"Accuracy goal met in {acc}/{len(rows)}, speed goal in {speed}/{len(rows)}; largest "
        f"overshoot {100 * over:+.3f}%; records: `{path}`.",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lcbench", type=Path, required=True)
    p.add_argument("--zeus", type=Path)
    p.add_argument("--heldout", type=Path, help="LCBench tasks not used to pick settings")
    p.add_argument("--extra", type=Path, help="further LCBench tasks, run to check a change")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    lc = json.loads(a.lcbench.read_text())
    png = a.out.with_suffix(".png")
    plot(lc, png)
    rows = goal_rows(lc)
    acc_met = sum(bool(r.get("accuracy_met")) for r in rows)
    speed_met = sum(bool(r.get("speed_met")) for r in rows)
    over = max(r["max_overshoot"] for r in rows)
    parts = [
        "# Budget efficiency: cost-aware search vs carbon-unaware baselines (simulated)",
        "",
        "All figures are simulated estimates (LCBench surrogate seconds x 300 W, 400 g/kWh,"
        " PUE 1).",
        f"Median best validation accuracy (%) over seeds 0-4; records: `{a.lcbench}`.",
        "",
        markdown(rows, STRATS),
        "",
        f"Goals met: accuracy (ours >= best baseline - 0.1 pt) in {acc_met}/{len(rows)} cells; "
        f"reach the best baseline's final value at <= 0.6x budget in {speed_met}/{len(rows)}; "
        f"largest overshoot of any run: {100 * over:+.3f}% of budget (goal <= +1%).",
        "",
        f"![anytime best vs kg CO2e]({png.name})",
    ]
    sections = (
        (
            a.heldout,
            "Held-out LCBench tasks (not used in the pilot runs that picked ours' settings)",
        ),
        (a.extra, "Further LCBench tasks (a second check, run once; see the end of this page)"),
    )
    for path, title in sections:
        if path and path.exists():
            parts += _task_section(title, goal_rows(json.loads(path.read_text())), path)
    if a.zeus and a.zeus.exists():
        zr = goal_rows(json.loads(a.zeus.read_text()))
        parts += [
            "",
            "## Zeus NSDI '23 traces (V100): energy-to-target in J, lower is better",
            "",
            markdown(zr, STRATS, relative=True),
            "",
            f"Largest overshoot: {100 * max(r['max_overshoot'] for r in zr):+.3f}% of budget.",
        ]
    parts += ["", NOTES]
    a.out.write_text("\n".join(parts) + "\n")
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

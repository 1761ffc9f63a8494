"""Overhead of the budgeted Optuna integration: plain Optuna vs metered + BudgetPruner +
BudgetCallback with a SQLite ledger, on Optuna's SQLite storage.

The objective takes ~20 ms (a busy wait) and reports ``--reports`` intermediate values. Both
arms run the same number of trials in blocks, interleaved A B A B ..., each arm growing one
study of its own, so machine noise (other processes, thermal state) hits both alike. Blocks
are 2 trials by default: on the shared 2-core machine a block's CPU time per trial swings by
+-20 % within seconds, and blocks of 10 left the ratio of a whole run uncertain by about
+-0.02; pairs of trials keep the two arms' conditions closer (the ``optimize()`` call a block
costs is the same in both arms). The figure
is the wall-time ratio (budgeted arm / plain arm), total and the median of the per-block ratios.
The budget is generous: it never binds, so every arm runs every trial.

The budgeted arm wires the three parts as :func:`hpsearch_budget.optuna.optimize` does: the
BudgetCallback is run by the metered objective (``metered(..., budget_callback=...)``). A
third arm passes the same callback to ``study.optimize(callbacks=[...])`` instead: Optuna then
reads every finished trial back from its storage and deep-copies it before calling any
callback, a cost of Optuna's that any callback pays (``--no-optuna-callback-arm`` skips it).

    python experiments/bench_optuna_overhead.py                # full: 500 trials per arm
    python experiments/bench_optuna_overhead.py --quick        # tiny: smoke test
    python experiments/bench_optuna_overhead.py --out experiments/results/bench_optuna_overhead.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.optuna import BudgetCallback, BudgetPruner, metered


def make_objective(work_s: float, reports: int):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        y = trial.suggest_float("y", -10, 10)
        for step in range(reports):
            end = time.perf_counter() + work_s / reports
            while time.perf_counter() < end:  # busy: a real objective computes
                pass
            trial.report((x - 2) ** 2 + y**2 + 1.0 / (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return (x - 2) ** 2 + y**2

    return objective


class Arm:
    """One side of the comparison: a study on its own SQLite storage, run in blocks."""

    def __init__(self, folder: Path, mode: str, work_s: float, reports: int, sampler: str) -> None:
        name = mode  # the study, its storage and its ledger are named after the arm
        storage = f"sqlite:///{folder / f'{name}-optuna.db'}"
        objective = make_objective(work_s, reports)
        samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
        self.callbacks: list | None = None
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
        if mode != "plain":
            ledger = Ledger(f"sqlite:///{folder / f'{name}-ledger.db'}")
            budget = Budget(co2e_kg=1000.0)  # never binds: every trial runs in every arm
            stop = BudgetCallback(budget, ledger)
            in_objective = mode == "budgeted"  # as optimize() wires it
            objective = metered(
                objective,
                ledger,
                budget=budget,
                max_steps=reports,
                budget_callback=stop if in_objective else None,
            )
            pruner = BudgetPruner(budget, ledger, max_steps=reports)
            self.callbacks = None if in_objective else [stop]
        self.study = optuna.create_study(
            study_name=name, storage=storage, pruner=pruner, sampler=samplers[sampler](seed=0)
        )
        self.objective = objective
        self.times: list[float] = []
        self.cpu: list[float] = []  # process CPU time: what other jobs on the machine inflate least

    def block(self, n: int) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        self.study.optimize(self.objective, n_trials=n, callbacks=self.callbacks)
        self.times.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu)


def _vs_plain(arm: Arm, plain: Arm) -> tuple[float, float]:
    """Wall-time ratio of ``arm`` to the plain arm: over the whole run, and the median of the
    per-block ratios."""
    blocks = [a / p for a, p in zip(arm.times, plain.times, strict=True)]
    return sum(arm.times) / sum(plain.times), statistics.median(blocks)


def run(
    trials: int, block: int, work_s: float, reports: int, sampler: str, callback_arm: bool = True
) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    modes = ["plain", "budgeted"] + (["budgeted_optuna_callback"] if callback_arm else [])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        arms = {m: Arm(folder, m, work_s, reports, sampler) for m in modes}
        order = list(arms.values())
        for i in range(trials // block):
            # rotate which arm goes first, so none always follows another
            for arm in order[i % len(order) :] + order[: i % len(order)]:
                arm.block(block)
        n_full = len(arms["budgeted"].study.trials)
    plain, full = arms["plain"], arms["budgeted"]
    ratio_total, ratio_median_block = _vs_plain(full, plain)
    result = {
        "trials_per_arm": trials,
        "block": block,
        "objective_s": work_s,
        "reports_per_trial": reports,
        "sampler": sampler,
        "plain_s": sum(plain.times),
        "budgeted_s": sum(full.times),
        "ratio_total": ratio_total,
        "ratio_median_block": ratio_median_block,
        "blocks": len(full.times),
        "plain_cpu_ms_per_trial": 1000 * sum(plain.cpu) / trials,
        "budgeted_cpu_ms_per_trial": 1000 * sum(full.cpu) / trials,
        "overhead_cpu_ms_per_trial": 1000 * (sum(full.cpu) - sum(plain.cpu)) / trials,
        "overhead_ms_per_trial_median_block": 1000
        * statistics.median(f - p for f, p in zip(full.times, plain.times, strict=True))
        / block,
        "plain_ms_per_trial": 1000 * sum(plain.times) / trials,
        "budgeted_ms_per_trial": 1000 * sum(full.times) / trials,
        "budgeted_trials_run": n_full,
        "python": sys.version.split()[0],
        "optuna": optuna.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_avg_1m": os.getloadavg()[0],
    }
    if callback_arm:
        cb = arms["budgeted_optuna_callback"]
        cb_total, cb_median_block = _vs_plain(cb, plain)
        result |= {
            "optuna_callback_s": sum(cb.times),
            "optuna_callback_ratio_total": cb_total,
            "optuna_callback_ratio_median_block": cb_median_block,
            "optuna_callback_ms_per_trial": 1000 * sum(cb.times) / trials,
            "optuna_callback_cpu_ms_per_trial": 1000 * sum(cb.cpu) / trials,
        }
    return result


def as_markdown(r: dict, command: str) -> str:
    return "\n".join(
        [
            "# Overhead of the budgeted Optuna integration",
            "",
            f"Command: `{command}`",
            "",
            f"{r['trials_per_arm']} trials per arm, objective {1000 * r['objective_s']:.0f} ms "
            f"with {r['reports_per_trial']} reports, {r['sampler']} sampler, Optuna "
            f"{r['optuna']} on SQLite storage; budgeted arm = metered + BudgetPruner + "
            f"BudgetCallback (run by the metered objective, as optimize() wires it), SQLite "
            f"ledger. Blocks of {r['block']} trials interleaved. "
            f"Machine: {r['machine']}, load average {r['load_avg_1m']:.1f} at the end (shared).",
            "",
            "| arm | wall s | ms / trial | CPU ms / trial |",
            "|---|---:|---:|---:|",
            f"| plain Optuna | {r['plain_s']:.1f} | {r['plain_ms_per_trial']:.1f} "
            f"| {r['plain_cpu_ms_per_trial']:.1f} |",
            f"| budgeted | {r['budgeted_s']:.1f} | {r['budgeted_ms_per_trial']:.1f} "
            f"| {r['budgeted_cpu_ms_per_trial']:.1f} |",
            *(
                [
                    f"| budgeted, BudgetCallback in study.optimize(callbacks=...) "
                    f"| {r['optuna_callback_s']:.1f} | {r['optuna_callback_ms_per_trial']:.1f} "
                    f"| {r['optuna_callback_cpu_ms_per_trial']:.1f} |"
                ]
                if "optuna_callback_s" in r
                else []
            ),
            "",
            f"**Wall-time ratio: {r['ratio_total']:.3f}** total, "
            f"{r['ratio_median_block']:.3f} median of the per-block ratios (target <= 1.05).",
            *(
                [
                    "",
                    f"With the BudgetCallback passed to study.optimize(callbacks=...): "
                    f"{r['optuna_callback_ratio_total']:.3f} total, "
                    f"{r['optuna_callback_ratio_median_block']:.3f} median of the per-block "
                    f"ratios (Optuna reads each finished trial back for its callbacks).",
                ]
                if "optuna_callback_s" in r
                else []
            ),
            "",
            "```json",
            json.dumps(r, indent=2),
            "```",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    p.add_argument("--trials", type=int, default=500)
    p.add_argument("--block", type=int, default=2, help="trials per block (arms alternate)")
    p.add_argument("--work-ms", type=float, default=20.0)
    p.add_argument("--reports", type=int, default=4)
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument(
        "--no-optuna-callback-arm",
        action="store_true",
        help="skip the third arm (BudgetCallback passed to study.optimize(callbacks=...))",
    )
    p.add_argument("--out", type=Path, default=None, help="write the result as Markdown here")
    args = p.parse_args(argv)
    trials, block = (10, 5) if args.quick else (args.trials, args.block)
    result = run(
        trials,
        block,
        args.work_ms / 1000,
        args.reports,
        args.sampler,
        callback_arm=not args.no_optuna_callback_arm,
    )
    command = "python experiments/bench_optuna_overhead.py " + " ".join(argv or sys.argv[1:])
    text = as_markdown(result, command.strip())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

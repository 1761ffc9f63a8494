#!/usr/bin/env python
"""Simulated budgeted sweeps: carbon-unaware baselines against the cost-aware search.

Sweeps run sequentially on a simulated clock, each trained epoch charged exactly its cost
(LCBench: surrogate seconds x --watts; Zeus: measured GPU joules), carbon at --g-per-kwh, PUE 1.
``--budget-k K`` sets the budget to K times the median cost of fully training a random
configuration of the task. Output: one record per (task, budget_k, seed, strategy).

    python experiments/sweep_sim.py --benchmark lcbench --tasks 3945,34539 --budget-k 10,30 \
        --seeds 0-4 --strategies all --format json > out.json
    python experiments/sweep_sim.py --quick          # seconds: one tiny sweep per strategy

Re-run one strategy and keep the stored records of the others (baselines are not re-run):

    python experiments/sweep_sim.py --strategies ours --format json \
        --merge-with experiments/results/budget_efficiency_lcbench.json \
        --out experiments/results/budget_efficiency_lcbench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sim import STRATEGIES, load_benchmark, run_sweep
from sim._bench import DEV_TASKS

from hpsearch_budget.errors import HpauditInputError

ZEUS_TASKS = ("cifar100", "imagenet", "librispeech", "movielens-1m", "sentiment140", "squad")


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--benchmark", choices=("lcbench", "zeus"), default="lcbench")
    p.add_argument("--tasks", default=None, help="comma list (default: the development tasks)")
    p.add_argument("--budget-k", default="10,30", help="comma list of K (budget = K x median)")
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3,7")
    p.add_argument(
        "--strategies", default="all", help="all or comma list of " + ",".join(STRATEGIES)
    )
    p.add_argument("--watts", type=float, default=300.0, help="LCBench: watts while training")
    p.add_argument("--g-per-kwh", type=float, default=400.0, help="grid carbon intensity")
    p.add_argument("--gpu", default="v100", help="Zeus power trace: a40, p100, rtx6000, v100")
    p.add_argument("--format", choices=("json", "table"), default="table")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (at most 2 here)")
    p.add_argument("--out", type=Path, default=None, help="write to this file (else stdout)")
    p.add_argument(
        "--merge-with",
        type=Path,
        default=None,
        help="JSON records to keep, except those this run replaces (same task, K, seed, strategy)",
    )
    p.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks = args.tasks or ("126025" if args.benchmark == "lcbench" else "squad")
        args.budget_k, args.seeds = "3", "0"
    return args


def _job(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bench = load_benchmark(spec["benchmark"], spec["task"], watts=spec["watts"], gpu=spec["gpu"])
    unit = bench.median_full_cost_j()
    out = []
    for k in spec["budget_k"]:
        for seed in spec["seeds"]:
            for strategy in spec["strategies"]:
                rec = run_sweep(
                    bench,
                    budget_k=k,
                    seed=seed,
                    strategy=strategy,
                    unit_cost_j=unit,
                    g_per_kwh=spec["g_per_kwh"],
                )
                out.append(rec.to_dict())
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        default = DEV_TASKS if args.benchmark == "lcbench" else ZEUS_TASKS
        tasks = args.tasks.split(",") if args.tasks else list(default)
        strategies = list(STRATEGIES) if args.strategies == "all" else args.strategies.split(",")
        bad = [s for s in strategies if s not in STRATEGIES]
        if bad:
            raise HpauditInputError(
                f"unknown strategy {bad[0]!r}; use all or {','.join(STRATEGIES)}"
            )
        # Read before the (long) runs: a bad file fails at once.
        stored = None if args.merge_with is None else _load_records(args.merge_with)
        ks = [float(k) for k in args.budget_k.split(",")]
        if any(k <= 0 for k in ks):
            raise HpauditInputError("--budget-k values must be > 0")
        specs = [
            dict(
                benchmark=args.benchmark,
                task=t,
                budget_k=ks,
                seeds=_seeds(args.seeds),
                strategies=strategies,
                watts=args.watts,
                g_per_kwh=args.g_per_kwh,
                gpu=args.gpu,
            )
            for t in tasks
        ]
        if args.jobs > 1:
            with ProcessPoolExecutor(max_workers=min(args.jobs, 2)) as pool:
                records = [r for rs in pool.map(_job, specs) for r in rs]
        else:
            records = [r for s in specs for r in _job(s)]
        if stored is not None:
            records = merge(stored, records)
    except (HpauditInputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(records, indent=1) if args.format == "json" else _table(records)
    if args.out:
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)  # never a half-written results file
    else:
        print(text)
    return 0


def _key(rec: dict[str, Any]) -> tuple[str, str, float, int, str]:
    return (rec["benchmark"], rec["task"], float(rec["budget_k"]), rec["seed"], rec["strategy"])


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with every record that ``new`` re-ran replaced, in ``old``'s order; then the rest.

    >>> a = dict(benchmark="b", task="t", budget_k=10.0, seed=0, strategy="ours", best_value=1)
    >>> b = dict(a, strategy="tpe")
    >>> [r["best_value"] for r in merge([a, b], [dict(a, best_value=2)])]
    [2, 1]
    """
    fresh = {_key(r): r for r in new}
    out = [fresh.pop(_key(r), r) for r in old]
    return out + list(fresh.values())


def _load_records(path: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HpauditInputError(f"--merge-with {path}: not a readable JSON file ({exc})") from exc
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and {"benchmark", "task", "budget_k", "seed", "strategy"} <= r.keys()
        for r in records
    ):
        raise HpauditInputError(f"--merge-with {path}: not a list of sweep_sim JSON records")
    return records


def _table(records: list[dict[str, Any]]) -> str:
    lines = [
        "task      K  seed strategy       best      spent/budget  trials  (estimated: simulated)"
    ]
    for r in records:
        frac = r["spent_co2e_g"] / r["budget_co2e_g"]
        best = "nan" if r["best_value"] is None else f"{r['best_value']:.4g}"
        lines.append(
            f"{r['task']:<9} {r['budget_k']:<3g}{r['seed']:>4} {r['strategy']:<14} {best:>8}"
            f"  {frac:>12.4f}  {r['n_trials']:>6}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

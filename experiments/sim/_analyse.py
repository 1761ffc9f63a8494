"""Goal table of issue 9 item 3 from sweep_sim records (median over seeds)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

BASELINES = ("random", "tpe", "tpe_hyperband", "tpe_median", "asha")
TOLERANCE = 0.1  # "within 0.1 points counts as met"


def reach_fraction(rec: dict[str, Any], target: float, tol: float = TOLERANCE) -> float:
    """Fraction of the budget spent when the run's best first came within ``tol`` of target."""
    sign = 1.0 if rec["direction"] == "maximize" else -1.0
    for co2e_g, best in rec["curve"]:
        if best == best and sign * best >= sign * target - tol:
            return co2e_g / rec["budget_co2e_g"]
    return math.inf


def goal_rows(records: list[dict[str, Any]], ours: str = "ours") -> list[dict[str, Any]]:
    by: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        by[(r["task"], r["budget_k"])][r["strategy"]].append(r)
    rows = []
    for (task, k), strat in sorted(by.items()):
        sign = 1.0 if next(iter(strat.values()))[0]["direction"] == "maximize" else -1.0
        med = {
            s: float(np.median([x["best_value"] for x in rs if x["best_value"] is not None]))
            for s, rs in strat.items()
        }
        bases = [s for s in BASELINES if s in med]
        best_base = max(bases, key=lambda s: sign * med[s]) if bases else None
        row: dict[str, Any] = {"task": task, "budget_k": k, "median_best": med}
        if best_base and ours in strat:
            target = med[best_base]
            fracs = [reach_fraction(x, target) for x in strat[ours]]
            row.update(
                best_baseline=best_base,
                gap=sign * (med[ours] - target),
                reach_frac=float(np.median(fracs)),
                accuracy_met=sign * (med[ours] - target) >= -TOLERANCE,
            )
            row["speed_met"] = row["reach_frac"] <= 0.6
        row["max_overshoot"] = max(x["overshoot_frac"] for rs in strat.values() for x in rs)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], strategies: list[str], relative: bool = False) -> str:
    """The goal table; ``relative`` shows the gap in % of the best baseline (energy in J)."""
    head = "| task | K | " + " | ".join(strategies) + " | best baseline | "
    head += "ours vs best (+ = ours better) | ours reaches it at (x budget) | goals |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [f"{r['median_best'].get(s, float('nan')):.2f}" for s in strategies]
        met = (
            ("acc ok" if r.get("accuracy_met") else "ACC MISSED")
            + ", "
            + ("speed ok" if r.get("speed_met") else "SPEED MISSED")
        )
        lines.append(
            f"| {r['task']} | {r['budget_k']:g} | "
            + " | ".join(cells)
            + f" | {r.get('best_baseline')} | {_gap(r, relative)} | "
            f"{r.get('reach_frac', float('nan')):.2f} | {met} |"
        )
    return "\n".join(lines)


def _gap(row: dict[str, Any], relative: bool) -> str:
    gap = row.get("gap", float("nan"))
    if not relative:
        return f"{gap:+.2f}"
    base = row["median_best"].get(row.get("best_baseline"), float("nan"))
    return f"{100 * gap / base:+.1f}%"

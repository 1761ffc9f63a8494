"""The reporting recommendations of Strubell et al. (2019), checked against a sweep's report.

The paper asks authors to report training time, the hardware used, the sensitivity to
hyperparameters, and (with Dodge et al. 2019) the variance over seeds; we add the share of the
energy that was measured rather than estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckItem:
    key: str  # stable identifier, e.g. "training_time"
    label: str
    status: str  # "ok" | "partial" | "missing"
    detail: str


#: Below this share of measured energy the item is only "partial".
MEASURED_SHARE_OK = 0.9


def checklist(
    *,
    n_trials_with_time: int,
    n_trials: int,
    hardware: list[str],
    importance_targets: list[str],
    seed_runs: int,
    measured_share: float,
) -> list[CheckItem]:
    """One item per recommendation, with what is missing and how to get it.

    >>> [i.status for i in checklist(n_trials_with_time=3, n_trials=3, hardware=["gpu:0"],
    ...  importance_targets=["objective"], seed_runs=0, measured_share=float("nan"))]
    ['ok', 'ok', 'partial', 'missing', 'missing']
    """
    items = []
    if n_trials and n_trials_with_time == n_trials:
        items.append(
            CheckItem(
                "training_time",
                "Training time reported",
                "ok",
                f"wall-clock time of all {n_trials} trials"
                if n_trials != 1
                else "wall-clock time of the trial",
            )
        )
    else:
        items.append(
            CheckItem(
                "training_time",
                "Training time reported",
                "partial" if n_trials_with_time else "missing",
                f"{n_trials_with_time} of {n_trials} trials have start and end times",
            )
        )
    items.append(
        CheckItem(
            "hardware",
            "Hardware reported",
            "ok" if hardware else "missing",
            ", ".join(hardware)
            if hardware
            else "no device or host recorded: meter the sweep "
            "with a ledger so devices are recorded",
        )
    )
    if {"objective", "energy"} <= set(importance_targets):
        status, detail = "ok", "importance for the objective and for energy"
    elif importance_targets:
        status, detail = "partial", f"importance for {', '.join(importance_targets)} only"
    else:
        status, detail = "missing", "too few complete trials for hyperparameter importance"
    items.append(CheckItem("sensitivity", "Sensitivity to hyperparameters", status, detail))
    items.append(
        CheckItem(
            "seeds",
            "Variance over seeds",
            "ok" if seed_runs >= 2 else "missing",
            f"{seed_runs} runs of the chosen configuration"
            if seed_runs >= 2
            else "rerun the chosen configuration with several seeds (ledger phase 'seed')",
        )
    )
    if math.isnan(measured_share):
        status, detail = "missing", "no energy data: meter the sweep (hpsearch_budget.optuna)"
    else:
        status = "ok" if measured_share >= MEASURED_SHARE_OK else "partial"
        detail = (
            f"{measured_share:.0%} of the energy from hardware counters "
            "(the rest estimated or projected)"
        )
    items.append(CheckItem("measured_energy", "Energy measured, not estimated", status, detail))
    return items

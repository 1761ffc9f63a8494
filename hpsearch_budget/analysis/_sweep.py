"""The one input every analysis reads: a sweep's trials as a typed pandas DataFrame.

Sources (an Optuna storage, a Ray Tune folder, a ledger) are converted into a :class:`Sweep`
by :mod:`hpsearch_budget.report`; the analyses never know where the rows came from. Energy is
in joules, carbon in grams, money in USD, time in seconds, as everywhere inside the package.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hpsearch_budget.errors import HpauditInputError

#: Trial fates, as in the ledger (Optuna's FAIL is "failed", Ray's ERROR too).
STATES = ("complete", "pruned", "failed", "running", "killed")

#: Columns of :attr:`Sweep.trials`; NaN where unknown (e.g. ``energy_j`` of an unmetered trial).
TRIAL_COLUMNS: dict[str, str] = {
    "number": "int64",
    "state": "object",
    "value": "float64",
    "params": "object",  # {name: external value}
    "distributions": "object",  # {name: optuna BaseDistribution} or None (inferred later)
    "started_at": "object",  # datetime (UTC) or None
    "ended_at": "object",
    "wall_s": "float64",
    "steps": "int64",  # number of reported intermediate values
    "energy_j": "float64",  # at the device, before PUE
    "co2e_g": "float64",  # PUE included
    "usd": "float64",  # electricity
    "gpu_s": "float64",
    "pue": "float64",
    "g_per_kwh": "float64",
    "energy_source": "object",  # measured | integrated | estimated | replayed | None
    "intensity_source": "object",
    "devices": "object",  # list[str]
    "host": "object",
}

#: Ledger phases of :attr:`Sweep.runs`: final training, seed reruns, and idle windows (what
#: the meter measured between trials, in the R&D total but never a trial).
RUN_PHASES = ("final", "seed", "idle")

#: Columns of :attr:`Sweep.runs` (final training, seed reruns and idle recorded in a ledger).
RUN_COLUMNS = (
    "phase",
    "status",
    "value",
    "params",
    "wall_s",
    "energy_j",
    "co2e_g",
    "usd",
    "gpu_s",
    "pue",
    "g_per_kwh",
    "energy_source",
    "devices",
    "host",
)


@dataclass
class Sweep:
    """A finished (or running) hyperparameter sweep, whatever it was read from.

    >>> sw = Sweep.from_records("demo", [
    ...     {"number": 0, "state": "complete", "value": 0.5, "params": {"lr": 0.1}},
    ...     {"number": 1, "state": "complete", "value": 0.7, "params": {"lr": 0.01}},
    ... ], direction="maximize")
    >>> sw.best_number(), sw.has_energy
    (1, False)
    """

    study: str
    trials: pd.DataFrame
    direction: str = "minimize"
    source_kind: str = "records"
    source: str = ""
    runs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(RUN_COLUMNS)))
    objective_name: str = "objective"
    notes: list[str] = field(default_factory=list)
    #: Derived data shared between analyses (e.g. trials prepared for importance).
    cache: dict[str, object] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.direction not in ("minimize", "maximize"):
            raise HpauditInputError(
                f"direction must be 'minimize' or 'maximize', got {self.direction!r}"
            )
        self.trials = _normalise(self.trials)

    @classmethod
    def from_records(cls, study: str, records: Iterable[Mapping[str, Any]], **kwargs: Any) -> Sweep:
        """Build from dicts with any subset of :data:`TRIAL_COLUMNS` (``number`` required)."""
        return cls(study=study, trials=pd.DataFrame(list(records)), **kwargs)

    # -- views ----------------------------------------------------------------------------
    @property
    def sign(self) -> float:
        """+1 when larger values are better, -1 when smaller are: ``sign * value`` is a score."""
        return 1.0 if self.direction == "maximize" else -1.0

    @property
    def complete(self) -> pd.DataFrame:
        """Complete trials with a finite objective value, in trial-number order."""
        t = self.trials
        return t[(t["state"] == "complete") & np.isfinite(t["value"].to_numpy(float))]

    @property
    def has_energy(self) -> bool:
        return bool(self.trials["energy_j"].notna().any())

    @property
    def has_carbon(self) -> bool:
        return bool(self.trials["co2e_g"].notna().any())

    def best_number(self) -> int | None:
        """Number of the best complete trial (the first one on ties), or None."""
        c = self.complete
        if c.empty:
            return None
        scores = self.sign * c["value"].to_numpy(float)
        return int(c["number"].to_numpy()[int(np.argmax(scores))])

    def best_trial(self) -> pd.Series | None:
        n = self.best_number()
        if n is None:
            return None
        return self.trials.loc[self.trials["number"] == n].iloc[0]


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing columns, coerce types, sort by trial number; reject what cannot be a sweep."""
    df = df.copy()
    if "number" not in df.columns:
        raise HpauditInputError("trial records need a 'number' column (the trial's index)")
    n = len(df)
    for col, dtype in TRIAL_COLUMNS.items():
        if col in df.columns:
            continue
        if dtype == "float64":
            df[col] = np.full(n, math.nan)
        elif dtype == "int64":
            df[col] = np.zeros(n, dtype=np.int64)
        elif col in ("params",):
            df[col] = [{} for _ in range(n)]
        elif col == "devices":
            df[col] = [[] for _ in range(n)]
        elif col == "state":
            df[col] = "complete"
        else:
            df[col] = None
    for col, dtype in TRIAL_COLUMNS.items():
        if dtype == "float64":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        elif dtype == "int64":
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    df["state"] = df["state"].fillna("complete")
    bad = sorted(map(str, set(df["state"]) - set(STATES)))
    if bad:
        raise HpauditInputError(f"unknown trial state(s) {bad}; expected one of {list(STATES)}")
    return df.sort_values("number", kind="stable").reset_index(drop=True)


def cumulative_co2e_g(trials: pd.DataFrame) -> np.ndarray:
    """Cumulative carbon in trial-number order (a trial without data adds nothing)."""
    return np.cumsum(np.nan_to_num(trials["co2e_g"].to_numpy(float), nan=0.0))

"""How much a sweep's result varies: seed reruns, the top-k spread, carbon after the best.

Strubell et al. and Dodge et al. both ask for the variance behind a reported number. A sweep
often holds it already: repeated runs of the chosen configuration (the ledger's complete
``final`` training and ``seed`` reruns, or trials with identical parameters), and the spread of
the best trials.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hpsearch_budget.analysis._sweep import Sweep
from hpsearch_budget.errors import HpauditInputError


@dataclass(frozen=True, slots=True)
class Spread:
    """Summary statistics of a set of objective values."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN for n < 2
    min: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Spread:
        v = np.asarray(values, dtype=float)
        std = float(np.std(v, ddof=1)) if v.size > 1 else math.nan
        return cls(int(v.size), float(np.mean(v)), std, float(np.min(v)), float(np.max(v)))


#: :attr:`SeedVariance.origin` of the ledger's final training and seed reruns: runs of the
#: final configuration (a lab policy's ``[reporting] seeds`` counts these).
LEDGER_SEED_RUNS = "ledger seed runs"


@dataclass(frozen=True, slots=True)
class SeedVariance:
    """Variance of the chosen configuration over repeated runs, or why it is unknown."""

    spread: Spread | None
    origin: str  # "ledger seed runs", "repeated trials", or "" when there are none
    note: str


@dataclass(frozen=True, slots=True)
class CarbonAfterBest:
    """Share of the sweep's carbon spent after the best-so-far came within ``tolerance``."""

    tolerance: float  # relative, e.g. 0.005
    reached_at_trial: int | None  # first trial number whose best-so-far was within tolerance
    co2e_g_after: float
    co2e_g_total: float
    energy_j_after: float
    energy_j_total: float

    @property
    def share(self) -> float:
        """Fraction of the carbon (energy when no carbon is known) spent after the best."""
        if self.co2e_g_total > 0:
            return self.co2e_g_after / self.co2e_g_total
        if self.energy_j_total > 0:
            return self.energy_j_after / self.energy_j_total
        return math.nan


def _params_key(params: object) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _values(runs: pd.DataFrame, phase: str) -> np.ndarray:
    """Objective values of the complete ``phase`` runs (a failed or killed run's last value is
    of a model trained part way, not a seed draw; runs built with no status column count)."""
    done = runs["status"] == "complete" if "status" in runs.columns else True
    rows = runs[(runs["phase"] == phase) & done]
    values = pd.to_numeric(rows["value"], errors="coerce").to_numpy(float)
    return values[np.isfinite(values)]


def _seed_runs(runs: pd.DataFrame) -> SeedVariance | None:
    """The spread over the ledger's seed draws of the final-training setup, or None.

    A seed rerun repeats the final training with another seed (DESIGN: final training + seed
    reruns), so the final training is one more draw of the same distribution and counts with
    them. Final rows alone are not seed variance: several of them are a retraining after a
    crash, or final trainings of different configurations.
    """
    if not len(runs):
        return None
    finals, seeds = _values(runs, "final"), _values(runs, "seed")
    if seeds.size == 0 or finals.size + seeds.size < 2:
        return None
    return SeedVariance(
        Spread.of(np.concatenate([finals, seeds])),
        LEDGER_SEED_RUNS,
        f"{finals.size} final training and {seeds.size} seed reruns of the chosen "
        "configuration (complete runs only)",
    )


def seed_variance(sweep: Sweep) -> SeedVariance:
    """Spread of the best configuration over its repeated runs.

    The final training and its seed reruns recorded in the ledger come first (see
    :func:`_seed_runs`); otherwise complete trials whose parameters equal the best trial's are
    treated as seed repeats.

    >>> sw = Sweep.from_records("s", [
    ...     {"number": i, "value": v, "params": {"lr": lr}}
    ...     for i, (v, lr) in enumerate([(0.9, 1), (0.8, 1), (0.5, 2)])
    ... ], direction="maximize")
    >>> sv = seed_variance(sw)
    >>> sv.origin, sv.spread.n, round(sv.spread.mean, 2)
    ('repeated trials', 2, 0.85)
    """
    best = sweep.best_trial()
    if best is None:
        return SeedVariance(None, "", "no complete trial, so no chosen configuration")
    recorded = _seed_runs(sweep.runs)
    if recorded is not None:
        return recorded
    complete = sweep.complete
    key = _params_key(best["params"])
    same = complete[[_params_key(p) == key for p in complete["params"]]]
    if len(same) >= 2:
        return SeedVariance(
            Spread.of(same["value"].to_numpy(float)),
            "repeated trials",
            f"{len(same)} complete trials share the chosen configuration's parameters "
            "(the best trial among them, picked for its value: the mean leans its way)",
        )
    return SeedVariance(
        None,
        "",
        "no repeated runs of the chosen configuration: rerun it with several seeds "
        "(ledger phase 'seed') to report its variance",
    )


def top_k_spread(sweep: Sweep, k: int = 10) -> Spread | None:
    """Spread of the objective over the ``k`` best complete trials (None when there are none).

    >>> sw = Sweep.from_records("s", [{"number": i, "value": v} for i, v in enumerate([3, 1, 2])])
    >>> top_k_spread(sw, k=2).max  # minimised: the two best are 1 and 2
    2.0
    """
    if k < 1:
        raise HpauditInputError(f"k must be >= 1, got {k}")
    values = sweep.complete["value"].to_numpy(float)
    if values.size == 0:
        return None
    best_first = values[np.argsort(-sweep.sign * values, kind="stable")][:k]
    return Spread.of(best_first)


def carbon_after_best(sweep: Sweep, tolerance: float = 0.005) -> CarbonAfterBest | None:
    """Carbon spent after the best-so-far first came within ``tolerance`` of the final best.

    Trials are taken in number order (the order Optuna and the ledger give them). The trial
    that reached the tolerance is itself counted as spent *before*. Relative tolerance is taken
    on ``|final best|``; a final best of 0 needs an exact match.

    >>> sw = Sweep.from_records("s", [
    ...     {"number": i, "value": v, "co2e_g": 10.0} for i, v in enumerate([5.0, 1.002, 1.0, 3.0])
    ... ])
    >>> r = carbon_after_best(sw)
    >>> r.reached_at_trial, r.co2e_g_after, r.share
    (1, 20.0, 0.5)
    """
    if not (0 <= tolerance < 1):
        raise HpauditInputError(f"tolerance must be in [0, 1), got {tolerance}")
    t = sweep.trials
    values = t["value"].to_numpy(float)
    ok = (t["state"].to_numpy() == "complete") & np.isfinite(values)
    if not ok.any():
        return None
    scores = np.where(ok, sweep.sign * values, -np.inf)
    best_so_far = np.maximum.accumulate(scores)
    final = best_so_far[-1]
    close = best_so_far >= final - tolerance * abs(final)
    first = int(np.argmax(close))
    co2 = np.nan_to_num(t["co2e_g"].to_numpy(float))
    energy = np.nan_to_num(t["energy_j"].to_numpy(float))
    return CarbonAfterBest(
        tolerance=tolerance,
        reached_at_trial=int(t["number"].iloc[first]),
        co2e_g_after=float(co2[first + 1 :].sum()),
        co2e_g_total=float(co2.sum()),
        energy_j_after=float(energy[first + 1 :].sum()),
        energy_j_total=float(energy.sum()),
    )

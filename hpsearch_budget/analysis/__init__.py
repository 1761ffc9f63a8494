"""Analysis of a finished sweep: R&D cost, sensitivity, variance, expected max performance.

Reads a :class:`Sweep` (built from an Optuna study, a Ray Tune folder or a ledger by
:mod:`hpsearch_budget.report`) and never measures.
"""

from hpsearch_budget.analysis._checklist import CheckItem, checklist
from hpsearch_budget.analysis._evp import EvpPoint, budget_grid, evp_curve, expected_max
from hpsearch_budget.analysis._rnd import Assumptions, PhaseCost, RndCost, WhatIf, rnd_cost
from hpsearch_budget.analysis._sensitivity import (
    EVALUATORS,
    Importance,
    importances,
    infer_distribution,
)
from hpsearch_budget.analysis._sweep import STATES, Sweep
from hpsearch_budget.analysis._variance import (
    CarbonAfterBest,
    SeedVariance,
    Spread,
    carbon_after_best,
    seed_variance,
    top_k_spread,
)

__all__ = [
    "EVALUATORS",
    "STATES",
    "Assumptions",
    "CarbonAfterBest",
    "CheckItem",
    "EvpPoint",
    "Importance",
    "PhaseCost",
    "RndCost",
    "SeedVariance",
    "Spread",
    "Sweep",
    "WhatIf",
    "budget_grid",
    "carbon_after_best",
    "checklist",
    "evp_curve",
    "expected_max",
    "importances",
    "infer_distribution",
    "rnd_cost",
    "seed_variance",
    "top_k_spread",
]

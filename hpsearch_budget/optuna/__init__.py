"""Optuna integration: metered trials, a budget pruner, a budget callback, optimize().

``optimize`` is the common case: every trial is metered into the ledger, reserves its
forecast cost before it runs, is pruned when the budget cannot pay for all running trials
(least promising first), and the study stops in every worker once what is left cannot pay for
a typical trial. Run the same call in many processes on one storage and one ledger.

    >>> import optuna, tempfile
    >>> from hpsearch_budget import Budget
    >>> from hpsearch_budget.optuna import optimize
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study()
    >>> run = optimize(study, lambda t: t.suggest_float("x", -1, 1) ** 2,
    ...                budget=Budget(co2e_kg=0.5, energy_kwh=2.0),
    ...                ledger=f"sqlite:///{tempfile.mkdtemp()}/ledger.db", n_trials=5)
    >>> run.n_complete, run.spent.co2e_kg < 0.5
    (5, True)
"""

from hpsearch_budget.optuna._callback import BudgetCallback
from hpsearch_budget.optuna._cost_aware import CostAwarePruner, CostAwareSampler, CostModel
from hpsearch_budget.optuna._cost_aware_rule import keep_fraction, promote_at_rung, rungs
from hpsearch_budget.optuna._metered import (
    MeteredObjective,
    MeteredTrial,
    ObjectiveValueError,
    metered,
)
from hpsearch_budget.optuna._optimize import BudgetedRun, optimize
from hpsearch_budget.optuna._pruner import BudgetPruner
from hpsearch_budget.optuna._space import draw_params

__all__ = [
    "BudgetCallback",
    "BudgetPruner",
    "BudgetedRun",
    "MeteredObjective",
    "MeteredTrial",
    "ObjectiveValueError",
    "draw_params",
    "metered",
    "optimize",
]
__all__ += [
    "CostAwarePruner",
    "CostAwareSampler",
    "CostModel",
    "keep_fraction",
    "promote_at_rung",
    "rungs",
]

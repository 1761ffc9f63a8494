"""Ray Tune integration: metered trainables, a ledger callback, budget-aware stopping.

* :func:`metered` wraps a function trainable: each trial is measured in its worker, on its
  node, and written to the shared ledger; every result gains ``energy_j``, ``co2e_g``,
  ``energy_source`` (and ``usd``, ``gpu_s``, ``hpaudit_window``, ``hpaudit_study``).
* :class:`LedgerCallback` closes, from the driver, windows a worker could not (crashes,
  ``Tuner.restore``), without counting anything twice.
* :class:`BudgetStopper` (a ``ray.tune.Stopper``) and :class:`BudgetScheduler` (wrapping ASHA,
  HyperBand or FIFO) keep the sweep inside a :class:`~hpsearch_budget.Budget`.

Many machines: see ``docs/ray-cluster.md`` (``ray start --head``, workers, one PostgreSQL ledger).
"""

try:
    import ray.tune  # noqa: F401
except ModuleNotFoundError as error:  # the ray extra is optional: say how to get it
    raise ModuleNotFoundError(
        "hpsearch_budget.ray needs Ray Tune: pip install 'hpsearch_budget[ray]'", name=error.name
    ) from error

from hpsearch_budget.ray._callback import LedgerCallback
from hpsearch_budget.ray._cost_aware import CostAwareASHAScheduler
from hpsearch_budget.ray._metered import RESULT_KEYS, metered
from hpsearch_budget.ray._scheduler import BudgetScheduler
from hpsearch_budget.ray._stopper import BudgetStopper

__all__ = ["RESULT_KEYS", "BudgetScheduler", "BudgetStopper", "LedgerCallback", "metered"]
__all__ += ["CostAwareASHAScheduler"]

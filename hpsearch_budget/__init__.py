"""hpsearch_budget: an energy ledger, cost model and budget scheduler for hyperparameter search.

The public API is re-exported here lazily, so ``import hpsearch_budget`` stays cheap and an
optional integration (Ray) is imported only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Budget": "hpsearch_budget.budget",
    "Cost": "hpsearch_budget.budget",
    "CarbonModel": "hpsearch_budget.carbon",
    "Ledger": "hpsearch_budget.ledger",
    "measure": "hpsearch_budget.meters",
    "Source": "hpsearch_budget.meters",
    "Measurement": "hpsearch_budget.meters",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hpsearch_budget' has no attribute {name!r}")

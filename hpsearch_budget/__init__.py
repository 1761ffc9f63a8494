"""hpsearch_budget: an energy ledger, cost model and budget scheduler for hyperparameter search.

The public API is re-exported here lazily, so ``import hpsearch_budget`` stays cheap and an
optional integration (Ray) is imported only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from hpsearch_budget.budget import Budget, Cost
    from hpsearch_budget.carbon import (
        CarbonModel,
        Intensity,
        gpu_price,
        region_intensity,
        resolve_intensity,
    )
    from hpsearch_budget.ledger import Ledger, Scope
    from hpsearch_budget.meters import Measurement, Source, default_meter, measure
    from hpsearch_budget.policy import Policy, load_policy

__version__ = "0.1.0"

_EXPORTS = {
    "Budget": "hpsearch_budget.budget",
    "Cost": "hpsearch_budget.budget",
    "CarbonModel": "hpsearch_budget.carbon",
    "Intensity": "hpsearch_budget.carbon",
    "resolve_intensity": "hpsearch_budget.carbon",
    "region_intensity": "hpsearch_budget.carbon",
    "gpu_price": "hpsearch_budget.carbon",
    "Ledger": "hpsearch_budget.ledger",
    "Scope": "hpsearch_budget.ledger",
    "measure": "hpsearch_budget.meters",
    "default_meter": "hpsearch_budget.meters",
    "Measurement": "hpsearch_budget.meters",
    "Source": "hpsearch_budget.meters",
    "Policy": "hpsearch_budget.policy",
    "load_policy": "hpsearch_budget.policy",
}

__all__ = [
    "Budget",
    "CarbonModel",
    "Cost",
    "Intensity",
    "Ledger",
    "Measurement",
    "Policy",
    "Scope",
    "Source",
    "__version__",
    "default_meter",
    "gpu_price",
    "load_policy",
    "measure",
    "region_intensity",
    "resolve_intensity",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hpsearch_budget' has no attribute {name!r}")

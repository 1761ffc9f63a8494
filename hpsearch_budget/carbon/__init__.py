"""Carbon and cost: PUE x grid intensity, electricity prices, cloud GPU-hour prices."""

from hpsearch_budget.carbon._model import DEFAULT_PUE, CarbonModel, Footprint
from hpsearch_budget.carbon.intensity import Intensity, IntensityProvider, StaticIntensity

__all__ = [
    "DEFAULT_PUE",
    "CarbonModel",
    "Footprint",
    "Intensity",
    "IntensityProvider",
    "StaticIntensity",
]

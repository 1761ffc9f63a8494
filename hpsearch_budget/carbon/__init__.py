"""Carbon and cost: PUE x grid intensity, electricity prices, cloud GPU-hour prices.

>>> from datetime import UTC, datetime
>>> model = CarbonModel(resolve_intensity(region="FR"), pue=1.1)
>>> model.footprint(3.6e6, datetime(2025, 1, 1, tzinfo=UTC)).energy_kwh
1.1
"""

from hpsearch_budget.carbon._holding import HoldingIntensity
from hpsearch_budget.carbon._model import (
    DEFAULT_PUE,
    CarbonModel,
    Footprint,
    default_carbon_model,
)
from hpsearch_budget.carbon._regions import Region, default_intensity, region_intensity, regions
from hpsearch_budget.carbon._resolve import resolve_intensity
from hpsearch_budget.carbon._series import TimeSeriesIntensity
from hpsearch_budget.carbon.intensity import (
    CallableIntensity,
    Intensity,
    IntensityProvider,
    StaticIntensity,
)
from hpsearch_budget.carbon.prices import (
    ElectricityPrice,
    PriceRange,
    default_electricity_price,
    electricity_price,
    gpu_price,
    known_accelerators,
)

__all__ = [
    "DEFAULT_PUE",
    "CallableIntensity",
    "CarbonModel",
    "ElectricityPrice",
    "Footprint",
    "HoldingIntensity",
    "Intensity",
    "IntensityProvider",
    "PriceRange",
    "Region",
    "StaticIntensity",
    "TimeSeriesIntensity",
    "default_carbon_model",
    "default_electricity_price",
    "default_intensity",
    "electricity_price",
    "gpu_price",
    "known_accelerators",
    "region_intensity",
    "regions",
    "resolve_intensity",
]

"""Energy meters: NVML (GPU), RAPL (CPU package / DRAM), an estimator and a replay meter.

>>> from hpsearch_budget.meters import ReplayMeter, measure
>>> meter = ReplayMeter(power_w=250)
>>> with measure(meter) as m:
...     _ = meter.advance(4.0)
>>> m.energy_j, m.source.value
(1000.0, 'replayed')
"""

from hpsearch_budget.meters._composite import CompositeMeter, default_meter, shared_meter
from hpsearch_budget.meters._measure import Measure, measure
from hpsearch_budget.meters.base import Measurement, Meter, Reading, Source, weakest
from hpsearch_budget.meters.estimate import WATTS_PER_CORE, WATTS_PER_GB, EstimateMeter, ProcessTree
from hpsearch_budget.meters.nvml import NvmlMeter
from hpsearch_budget.meters.rapl import RaplMeter
from hpsearch_budget.meters.replay import ReplayMeter

__all__ = [
    "WATTS_PER_CORE",
    "WATTS_PER_GB",
    "CompositeMeter",
    "EstimateMeter",
    "Measure",
    "Measurement",
    "Meter",
    "NvmlMeter",
    "ProcessTree",
    "RaplMeter",
    "Reading",
    "ReplayMeter",
    "Source",
    "default_meter",
    "measure",
    "shared_meter",
    "weakest",
]

"""Energy meters: NVML (GPU), RAPL (CPU package / DRAM), an estimator and a replay meter."""

from hpsearch_budget.meters.base import Measurement, Meter, Reading, Source, weakest

__all__ = ["Measurement", "Meter", "Reading", "Source", "weakest"]

"""A simulated clock that charges every trained epoch exactly, and a fast in-process accountant.

The clock is the library's :class:`hpsearch_budget.meters.ReplayMeter` (domain ``replay``,
source ``replayed``): nothing is measured; the simulator advances it by each epoch's seconds and
charges the epoch's joules. :class:`SimAccountant` turns the meter into
:class:`~hpsearch_budget.budget.Cost` (carbon through the library's
:class:`~hpsearch_budget.carbon.CarbonModel`) and answers the one question the budget asks
before each epoch: does the forecast cost still fit?
"""

from __future__ import annotations

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.carbon import CarbonModel, StaticIntensity
from hpsearch_budget.meters import Measurement, ReplayMeter


class SimAccountant:
    """Spent cost of one simulated sweep, against one budget.

    >>> acc = SimAccountant(Budget(co2e_kg=0.001), g_per_kwh=400.0)  # 1 g
    >>> acc.charge(seconds=10.0, joules=3600.0).co2e_g  # 1 Wh at 400 g/kWh
    0.4
    >>> acc.fits(acc.cost_of(seconds=10.0, joules=3600.0))
    True
    >>> acc.fits(acc.cost_of(seconds=20.0, joules=7200.0))
    False
    """

    def __init__(self, budget: Budget, *, g_per_kwh: float = 400.0, pue: float = 1.0) -> None:
        self.budget = budget
        self.limit = budget.as_cost()
        self.meter = ReplayMeter(0.0)  # energy comes from charge(), time from advance()
        self.carbon = CarbonModel(StaticIntensity.of(g_per_kwh, "sweep_sim --g-per-kwh"), pue=pue)
        self._origin = self.meter.read()

    def cost_of(self, *, seconds: float, joules: float) -> Cost:
        fp = self.carbon.footprint(joules)
        return Cost(energy_j=joules, co2e_g=fp.co2e_g, usd=fp.usd, gpu_s=seconds)

    @property
    def measurement(self) -> Measurement:
        return self.meter.read() - self._origin

    @property
    def spent(self) -> Cost:
        m = self.measurement
        return self.cost_of(seconds=m.wall_s, joules=m.energy_j)

    def charge(self, *, seconds: float, joules: float) -> Cost:
        """Advance the clock by one epoch; returns the sweep's spent cost."""
        self.meter.advance(seconds)
        self.meter.charge(joules)
        return self.spent

    def fits(self, more: Cost) -> bool:
        """Whether spending ``more`` now stays inside the budget."""
        return self.budget.fits(self.spent + more)

    def left(self) -> Cost:
        return self.limit - self.spent

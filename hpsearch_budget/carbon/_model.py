"""Joules -> kWh x PUE -> g CO2e and USD."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from hpsearch_budget.carbon.intensity import Intensity, IntensityProvider, StaticIntensity
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import j_to_kwh

#: Paper default (Strubell et al. 2019), which is also the Uptime Institute's 2019/2023
#: global average data-centre PUE.
DEFAULT_PUE = 1.58


@dataclass(frozen=True, slots=True)
class Footprint:
    """Carbon and money for some energy, with the factors that produced them."""

    energy_j: float  # at the device, before PUE
    energy_kwh: float  # at the meter of the building: PUE included
    co2e_g: float
    usd: float
    g_per_kwh: float
    intensity_source: str
    pue: float


@dataclass(frozen=True)
class CarbonModel:
    """Turns device energy into facility energy (PUE), carbon (intensity) and money (price).

    >>> model = CarbonModel(StaticIntensity.of(400.0), pue=1.5, usd_per_kwh=0.1)
    >>> f = model.footprint(3.6e6)  # 1 kWh at the device
    >>> f.energy_kwh, f.co2e_g, round(f.usd, 2)
    (1.5, 600.0, 0.15)
    """

    intensity: IntensityProvider
    pue: float = DEFAULT_PUE
    usd_per_kwh: float = 0.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.pue < math.inf:
            raise HpauditInputError(
                f"PUE must be a finite number >= 1.0 (a ratio of facility to IT power), got "
                f"{self.pue}"
            )
        if not 0.0 <= self.usd_per_kwh < math.inf:
            raise HpauditInputError(
                f"electricity price must be a finite number >= 0 USD/kWh, got {self.usd_per_kwh}"
            )

    def footprint(self, energy_j: float, when: datetime | None = None) -> Footprint:
        return self.charge(energy_j, self.intensity.at(when or datetime.now(UTC)))

    def charge(self, energy_j: float, intensity: Intensity) -> Footprint:
        """The footprint of ``energy_j`` at a given ``intensity`` (this model's PUE, price)."""
        kwh = j_to_kwh(energy_j) * self.pue
        return Footprint(
            energy_j=energy_j,
            energy_kwh=kwh,
            co2e_g=kwh * intensity.g_per_kwh,
            usd=kwh * self.usd_per_kwh,
            g_per_kwh=intensity.g_per_kwh,
            intensity_source=intensity.label,
            pue=self.pue,
        )


def default_carbon_model() -> CarbonModel:
    """World-average intensity, the paper's PUE (1.58) and the default US electricity price."""
    from hpsearch_budget.carbon._regions import default_intensity
    from hpsearch_budget.carbon.prices import default_electricity_price

    return CarbonModel(
        StaticIntensity(default_intensity()),
        pue=DEFAULT_PUE,
        usd_per_kwh=default_electricity_price().usd_per_kwh,
    )

"""The cost model of Strubell, Ganesh & McCallum (ACL 2019), Eq. 1 and 2.

    p_t  = PUE x t x (p_c + p_r + g x p_g) / 1000     kWh   (t in hours, powers in W)   (1)
    CO2e = intensity x p_t                                                               (2)

with the paper's defaults PUE = 1.58 and 0.954 lbs CO2e/kWh (EPA, US average, 2018). Cloud cost
is hours x devices x the price range of one device-hour; electricity cost is p_t x price.
Pure functions and one typed result, shared by ``hpaudit estimate``, the report and the
paper reproductions in ``experiments/paper_tables.py``. Every figure here is an estimate.

>>> e = estimate(power_w=1415.78, hours=12, accelerator="P100", devices=8,
...              price_edition="strubell2019")   # Table 3, Transformer base
>>> round(e.energy_kwh), round(e.co2e_lbs), round(e.cloud_usd_low), round(e.cloud_usd_high)
(27, 26, 41, 140)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from hpsearch_budget.carbon import Intensity, PriceRange, default_electricity_price, gpu_price
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import (
    g_to_kg,
    g_to_lbs,
    lbs_per_kwh_to_g_per_kwh,
    watts_hours_to_kwh,
)

#: The paper's PUE: the 2018 global average data-centre PUE (Ascierto, Uptime Institute).
PAPER_PUE = 1.58
#: The paper's intensity: EPA's US average, 0.954 lbs CO2e per kWh (2018).
PAPER_LBS_PER_KWH = 0.954


def paper_intensity() -> Intensity:
    """The paper's grid intensity (0.954 lbs/kWh, about 432.7 g/kWh) with its source."""
    return Intensity(
        lbs_per_kwh_to_g_per_kwh(PAPER_LBS_PER_KWH),
        "EPA US average, 0.954 lbs/kWh, as used by Strubell et al. 2019",
        2018,
    )


def total_power_w(
    *, cpu_w: float = 0.0, dram_w: float = 0.0, gpu_w: float = 0.0, gpus: int = 1
) -> float:
    """p_c + p_r + g x p_g: the machine's average draw (the paper's "Power (W)" column)."""
    for name, value in (("cpu_w", cpu_w), ("dram_w", dram_w), ("gpu_w", gpu_w)):
        _check(value, name)
    _check_devices(gpus)
    return cpu_w + dram_w + gpus * gpu_w


def energy_kwh(power_w: float, hours: float, pue: float = PAPER_PUE) -> float:
    """Eq. 1: facility energy in kWh, PUE included."""
    _check(power_w, "power_w")
    _check(hours, "hours")
    _check_pue(pue)
    return float(pue * watts_hours_to_kwh(power_w, hours))


def co2e_g(energy_kwh: float, g_per_kwh: float) -> float:
    """Eq. 2: grams CO2e for ``energy_kwh`` at ``g_per_kwh``."""
    _check(energy_kwh, "energy_kwh")
    _check(g_per_kwh, "g_per_kwh")
    return float(energy_kwh * g_per_kwh)


def cloud_cost_usd(hours: float, devices: int, price: PriceRange) -> tuple[float, float]:
    """(low, high) USD to rent ``devices`` accelerators for ``hours``."""
    _check(hours, "hours")
    _check_devices(devices)
    return price.cost(device_hours=float(hours * devices))


def electricity_cost_usd(energy_kwh: float, usd_per_kwh: float) -> float:
    _check(energy_kwh, "energy_kwh")
    _check(usd_per_kwh, "usd_per_kwh")
    return float(energy_kwh * usd_per_kwh)


@dataclass(frozen=True, slots=True)
class PaperEstimate:
    """One row of the paper's Table 3 / Table 4 shape. All figures are estimates."""

    power_w: float
    hours: float
    pue: float
    energy_kwh: float  # PUE included
    g_per_kwh: float
    intensity_source: str
    co2e_g: float
    usd_per_kwh: float
    electricity_price_source: str
    electricity_usd: float
    accelerator: str | None = None
    devices: int = 1
    cloud_usd_low: float | None = None
    cloud_usd_high: float | None = None
    price_source: str | None = None
    price_date: str | None = None

    @property
    def co2e_kg(self) -> float:
        return g_to_kg(self.co2e_g)

    @property
    def co2e_lbs(self) -> float:
        return g_to_lbs(self.co2e_g)

    def as_dict(self) -> dict[str, object]:
        """Flat record with the derived kg / lbs figures (the CLI's JSON)."""
        return {**asdict(self), "co2e_kg": self.co2e_kg, "co2e_lbs": self.co2e_lbs}


def estimate(
    *,
    power_w: float,
    hours: float,
    pue: float = PAPER_PUE,
    intensity: Intensity | None = None,
    usd_per_kwh: float | None = None,
    accelerator: str | PriceRange | None = None,
    devices: int = 1,
    price_edition: str = "current",
) -> PaperEstimate:
    """Eq. 1 and 2 plus cloud and electricity cost for one training run or sweep.

    ``intensity`` defaults to the paper's (EPA US, 0.954 lbs/kWh); ``usd_per_kwh`` to the
    shipped US average; ``accelerator`` (a name or a :class:`PriceRange`) adds the cloud cost of
    ``devices`` of them for ``hours``.
    """
    intensity = intensity or paper_intensity()
    kwh = energy_kwh(power_w, hours, pue)
    if usd_per_kwh is None:
        default = default_electricity_price()
        usd_per_kwh, price_label = default.usd_per_kwh, default.label
    else:
        price_label = "user-supplied"
    _check_devices(devices)
    low = high = None
    price = None
    if accelerator is not None:
        price = (
            accelerator
            if isinstance(accelerator, PriceRange)
            else gpu_price(accelerator, edition=price_edition)
        )
        low, high = cloud_cost_usd(hours, devices, price)
    return PaperEstimate(
        power_w=float(power_w),
        hours=float(hours),
        pue=float(pue),
        energy_kwh=kwh,
        g_per_kwh=intensity.g_per_kwh,
        intensity_source=intensity.label,
        co2e_g=co2e_g(kwh, intensity.g_per_kwh),
        usd_per_kwh=float(usd_per_kwh),
        electricity_price_source=price_label,
        electricity_usd=electricity_cost_usd(kwh, usd_per_kwh),
        accelerator=price.accelerator if price else None,
        devices=int(devices),
        cloud_usd_low=low,
        cloud_usd_high=high,
        price_source=f"{price.source} [{price.edition}]" if price else None,
        price_date=price.date if price else None,
    )


def _check(value: float, name: str) -> None:
    # numbers.Real: numpy scalars (a DataFrame's values) are numbers too.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HpauditInputError(f"{name} must be a number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise HpauditInputError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_pue(pue: float) -> None:
    if isinstance(pue, bool) or not isinstance(pue, numbers.Real):
        raise HpauditInputError(f"PUE must be a number >= 1, got {pue!r}")
    if not (math.isfinite(pue) and pue >= 1.0):
        raise HpauditInputError(
            f"PUE must be >= 1 (facility power / IT power; the paper uses 1.58), got {pue!r}"
        )


def _check_devices(devices: int) -> None:
    if isinstance(devices, bool) or not isinstance(devices, numbers.Integral) or devices < 1:
        raise HpauditInputError(f"number of devices must be a whole number >= 1, got {devices!r}")

"""Money: the electricity price default and cloud accelerator-hour price ranges.

Cloud prices are ranges per device-hour: the low end is the spot / preemptible price, the high
end the on-demand price, as in Strubell et al. (2019) Table 3. Two editions ship in
``data/gpu_prices.csv``: ``"current"`` (recent list prices, approximate) and ``"strubell2019"``
(the prices behind the paper's tables, for reproductions). Every row has a source and a date.

>>> p = gpu_price("Tesla P100", edition="strubell2019")
>>> p.low_usd_per_hour, p.high_usd_per_hour
(0.43, 1.46)
>>> [round(x, 2) for x in p.cost(device_hours=8 * 12)]  # the paper's Transformer base row
[41.28, 140.16]
>>> default_electricity_price().usd_per_kwh
0.1268
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

from hpsearch_budget.errors import HpauditInputError, UnknownAcceleratorError

EDITIONS = ("current", "strubell2019")


@dataclass(frozen=True, slots=True)
class PriceRange:
    """Cloud price of one accelerator-hour, spot (low) to on-demand (high)."""

    accelerator: str
    spot_low_usd_per_hour: float
    spot_high_usd_per_hour: float
    on_demand_low_usd_per_hour: float
    on_demand_high_usd_per_hour: float
    unit: str  # what one "device" is: a GPU, or a TPU board
    source: str
    date: str  # when the prices were read, YYYY-MM
    edition: str

    @property
    def low_usd_per_hour(self) -> float:
        return self.spot_low_usd_per_hour

    @property
    def high_usd_per_hour(self) -> float:
        return self.on_demand_high_usd_per_hour

    def cost(self, device_hours: float) -> tuple[float, float]:
        """(low, high) USD for ``device_hours`` (hours x number of devices)."""
        return device_hours * self.low_usd_per_hour, device_hours * self.high_usd_per_hour


@dataclass(frozen=True, slots=True)
class ElectricityPrice:
    usd_per_kwh: float
    source: str
    year: int

    @property
    def label(self) -> str:
        return f"{self.source} ({self.year})"


def _normalise(name: str) -> str:
    key = name.strip().lower()
    for noise in ("nvidia", "tesla", "google", " ", "-", "_"):
        key = key.replace(noise, "")
    return key


def _read(table: str) -> list[dict[str, str]]:
    text = resources.files("hpsearch_budget.carbon").joinpath("data", table).read_text("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


@cache
def _gpu_index() -> dict[tuple[str, str], PriceRange]:
    index: dict[tuple[str, str], PriceRange] = {}
    for row in _read("gpu_prices.csv"):
        price = PriceRange(
            accelerator=row["accelerator"],
            spot_low_usd_per_hour=float(row["spot_low"]),
            spot_high_usd_per_hour=float(row["spot_high"]),
            on_demand_low_usd_per_hour=float(row["on_demand_low"]),
            on_demand_high_usd_per_hour=float(row["on_demand_high"]),
            unit=row["unit"],
            source=row["source"],
            date=row["date"],
            edition=row["edition"],
        )
        for name in [row["accelerator"], *row["aliases"].split(";")]:
            if name:
                index[(row["edition"], _normalise(name))] = price
    return index


def known_accelerators(edition: str = "current") -> list[str]:
    """Accelerator names with a price in ``edition``."""
    return sorted({p.accelerator for (ed, _), p in _gpu_index().items() if ed == edition})


def gpu_price(name: str, *, edition: str = "current") -> PriceRange:
    """Price range of one accelerator-hour; :class:`UnknownAcceleratorError` lists known names."""
    if edition not in EDITIONS:
        raise HpauditInputError(
            f"unknown price edition {edition!r}; use one of {', '.join(EDITIONS)}"
        )
    price = _gpu_index().get((edition, _normalise(name)))
    if price is None:
        known = ", ".join(known_accelerators(edition))
        raise UnknownAcceleratorError(
            f"no {edition} cloud price for accelerator {name!r}; known: {known} "
            "(leave out --gpu to skip the cloud cost)"
        )
    return price


@cache
def _electricity() -> dict[str, ElectricityPrice]:
    return {
        row["name"]: ElectricityPrice(float(row["usd_per_kwh"]), row["source"], int(row["year"]))
        for row in _read("electricity_prices.csv")
    }


def electricity_price(name: str = "us") -> ElectricityPrice:
    """A shipped electricity price (``"us"``: latest US average; ``"us-2018"``: the paper's era)."""
    try:
        return _electricity()[name.lower()]
    except KeyError:
        known = ", ".join(sorted(_electricity()))
        raise HpauditInputError(f"no electricity price named {name!r}; known: {known}") from None


def default_electricity_price() -> ElectricityPrice:
    """The default USD/kWh when none is given: the latest US average retail price."""
    return electricity_price("us")

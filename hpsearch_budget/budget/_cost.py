"""Cost: what a trial, a sweep or a reservation spends, in every unit a budget can limit."""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpsearch_budget.units import g_to_kg, j_to_kwh, s_to_hours


@dataclass(frozen=True, slots=True)
class Cost:
    """Energy at the device (J), carbon (g CO2e, PUE included), money (USD) and GPU time (s)."""

    energy_j: float = 0.0
    co2e_g: float = 0.0
    usd: float = 0.0
    gpu_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.energy_j + other.energy_j,
            self.co2e_g + other.co2e_g,
            self.usd + other.usd,
            self.gpu_s + other.gpu_s,
        )

    def __sub__(self, other: Cost) -> Cost:
        return Cost(
            self.energy_j - other.energy_j,
            self.co2e_g - other.co2e_g,
            self.usd - other.usd,
            self.gpu_s - other.gpu_s,
        )

    def scale(self, factor: float) -> Cost:
        return Cost(
            self.energy_j * factor, self.co2e_g * factor, self.usd * factor, self.gpu_s * factor
        )

    def clip(self) -> Cost:
        """No negative component (a release can never give back more than was reserved)."""
        return Cost(
            max(0.0, self.energy_j), max(0.0, self.co2e_g), max(0.0, self.usd), max(0.0, self.gpu_s)
        )

    @property
    def energy_kwh(self) -> float:
        return j_to_kwh(self.energy_j)

    @property
    def co2e_kg(self) -> float:
        return g_to_kg(self.co2e_g)

    @property
    def gpu_hours(self) -> float:
        return s_to_hours(self.gpu_s)

    def describe_limit(self) -> str:
        """A limit's finite parts in the units budgets are given in (an unlimited part is
        ``inf`` and left out).

        >>> inf = float("inf")
        >>> Cost(energy_j=3.6e6, co2e_g=inf, usd=inf, gpu_s=7200.0).describe_limit()
        '1 kWh, 2 GPU-h'
        """
        parts = [
            (self.co2e_kg, "kg CO2e"),
            (self.energy_kwh, "kWh"),
            (self.usd, "USD"),
            (self.gpu_hours, "GPU-h"),
        ]
        return ", ".join(f"{v:.3g} {unit}" for v, unit in parts if math.isfinite(v)) or "none"

    def describe(self) -> str:
        """Carbon and energy in the units budgets are given in.

        >>> Cost(energy_j=3.6e6, co2e_g=400.0).describe()
        '0.4 kg CO2e / 1 kWh'
        """
        return f"{self.co2e_kg:.3g} kg CO2e / {self.energy_kwh:.3g} kWh"

    def describe_in(self, limit: Cost) -> str:
        """:meth:`describe`, plus USD and GPU-hours where ``limit`` limits them: a message about
        a USD or GPU-hour limit must show what was spent of it.

        >>> inf = float("inf")
        >>> Cost(energy_j=3.6e6, co2e_g=400.0, usd=0.5).describe_in(Cost(inf, inf, 1.0, inf))
        '0.4 kg CO2e / 1 kWh / 0.5 USD'
        """
        extra = [
            f"{value:.3g} {unit}"
            for value, lim, unit in (
                (self.usd, limit.usd, "USD"),
                (self.gpu_hours, limit.gpu_s, "GPU-h"),
            )
            if math.isfinite(lim)
        ]
        return " / ".join([self.describe(), *extra])

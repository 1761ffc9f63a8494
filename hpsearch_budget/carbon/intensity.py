"""Grid carbon intensity providers: g CO2e per kWh at the time energy was spent.

A provider answers ``at(when)`` with an :class:`Intensity` that carries its value, source and
year, so every carbon figure can say where its intensity came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from hpsearch_budget.errors import HpauditInputError


@dataclass(frozen=True, slots=True)
class Intensity:
    g_per_kwh: float
    source: str
    year: int | None = None

    def __post_init__(self) -> None:
        if not self.g_per_kwh >= 0:  # also rejects NaN
            raise HpauditInputError(
                f"carbon intensity must be a number >= 0 g/kWh, got {self.g_per_kwh!r}"
            )

    @property
    def label(self) -> str:
        return f"{self.source} ({self.year})" if self.year else self.source


@runtime_checkable
class IntensityProvider(Protocol):
    def at(self, when: datetime) -> Intensity:
        """Intensity in force at ``when`` (a timezone-aware UTC datetime)."""
        ...


@dataclass(frozen=True, slots=True)
class StaticIntensity:
    """One number for all times: a user-given value, or a table row."""

    intensity: Intensity

    @classmethod
    def of(cls, g_per_kwh: float, source: str = "user-supplied", year: int | None = None):
        return cls(Intensity(float(g_per_kwh), source, year))

    def at(self, when: datetime) -> Intensity:
        return self.intensity

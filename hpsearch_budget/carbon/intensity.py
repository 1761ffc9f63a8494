"""Grid carbon intensity providers: g CO2e per kWh at the time energy was spent.

A provider answers ``at(when)`` with an :class:`Intensity` that carries its value, source and
year, so every carbon figure can say where its intensity came from.

>>> from datetime import UTC, datetime
>>> StaticIntensity.of(56.0, "RTE eco2mix", 2023).at(datetime.now(UTC)).label
'RTE eco2mix (2023)'
>>> CallableIntensity(lambda when: 300.0 if when.hour < 12 else 200.0).at(
...     datetime(2025, 1, 1, 18, tzinfo=UTC)).g_per_kwh
200.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from hpsearch_budget.errors import HpauditInputError


@dataclass(frozen=True, slots=True)
class Intensity:
    """Grid carbon intensity in g CO2e/kWh, with where it came from and the year it describes."""

    g_per_kwh: float
    source: str
    year: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.g_per_kwh < math.inf:  # also rejects NaN
            raise HpauditInputError(
                f"carbon intensity must be a finite number >= 0 g/kWh, got {self.g_per_kwh!r}"
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
    def of(
        cls, g_per_kwh: float, source: str = "user-supplied", year: int | None = None
    ) -> StaticIntensity:
        return cls(Intensity(float(g_per_kwh), source, year))

    def at(self, when: datetime) -> Intensity:
        return self.intensity


@dataclass(frozen=True)
class CallableIntensity:
    """Intensity from a function of time: a live API client, a forecast, a model.

    ``fn(when)`` returns g/kWh (labelled with ``source``) or a full :class:`Intensity`.
    """

    fn: Callable[[datetime], float | Intensity]
    source: str = "user-supplied function"

    def at(self, when: datetime) -> Intensity:
        value = self.fn(when)
        if isinstance(value, Intensity):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise HpauditInputError(
                f"intensity function returned {value!r}; it must return g/kWh (a number) "
                "or an Intensity"
            )
        return Intensity(float(value), self.source, when.year)

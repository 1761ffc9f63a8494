"""Budget: limits in kg CO2e, kWh, USD and GPU-hours; the binding one is nearest exhaustion."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from hpsearch_budget.budget._cost import Cost
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import kg_to_g, kwh_to_j

_LIMIT_FIELDS = ("co2e_kg", "energy_kwh", "usd", "gpu_hours")


class Budget(BaseModel):
    """A limit on a sweep's cost: any non-empty combination of the four units.

    >>> b = Budget(co2e_kg=2.0, energy_kwh=10.0)
    >>> b.remaining_fraction(Cost(energy_j=18e6, co2e_g=500.0))  # 5 kWh of 10, 0.5 kg of 2
    0.5
    >>> b.binding(Cost(energy_j=18e6, co2e_g=500.0))
    'energy_kwh'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    co2e_kg: float | None = None
    energy_kwh: float | None = None
    usd: float | None = None
    gpu_hours: float | None = None

    def __init__(self, **data: object) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:  # one line, not pydantic's multi-line report
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])  # empty for whole-model checks
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise HpauditInputError(
                f"invalid budget: {where + ': ' if where else ''}{msg}"
            ) from None

    @model_validator(mode="after")
    def _check(self) -> Budget:
        limits = self.limits()
        if not limits:
            raise ValueError("give at least one limit: co2e_kg=, energy_kwh=, usd= or gpu_hours=")
        for name, value in limits.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        return self

    def limits(self) -> dict[str, float]:
        """The limits that are set, in the budget's own units."""
        return {f: getattr(self, f) for f in _LIMIT_FIELDS if getattr(self, f) is not None}

    def as_cost(self) -> Cost:
        """The limits in :class:`Cost` units; unset limits are +inf."""
        inf = math.inf
        return Cost(
            energy_j=kwh_to_j(self.energy_kwh) if self.energy_kwh is not None else inf,
            co2e_g=kg_to_g(self.co2e_kg) if self.co2e_kg is not None else inf,
            usd=self.usd if self.usd is not None else inf,
            gpu_s=self.gpu_hours * 3600.0 if self.gpu_hours is not None else inf,
        )

    def used_fractions(self, cost: Cost) -> dict[str, float]:
        """For each set limit, the fraction of it that ``cost`` uses."""
        used = {
            "co2e_kg": cost.co2e_kg,
            "energy_kwh": cost.energy_kwh,
            "usd": cost.usd,
            "gpu_hours": cost.gpu_hours,
        }
        return {name: used[name] / limit for name, limit in self.limits().items()}

    def binding(self, cost: Cost) -> str:
        """The name of the limit nearest to exhaustion after spending ``cost``."""
        fractions = self.used_fractions(cost)
        return max(fractions, key=lambda k: fractions[k])

    def remaining_fraction(self, cost: Cost) -> float:
        """Fraction left of the binding limit (negative once overspent)."""
        return 1.0 - max(self.used_fractions(cost).values())

    def fits(self, cost: Cost) -> bool:
        """Whether ``cost`` stays inside every limit."""
        return all(f <= 1.0 + 1e-12 for f in self.used_fractions(cost).values())

    def intersect(self, other: Budget) -> Budget:
        """The tighter of two budgets, limit by limit (a study budget under a policy cap)."""
        merged: dict[str, float] = {}
        for name in _LIMIT_FIELDS:
            values = [v for v in (getattr(self, name), getattr(other, name)) if v is not None]
            if values:
                merged[name] = min(values)
        return Budget(**merged)

    def describe(self) -> str:
        units = {"co2e_kg": "kg CO2e", "energy_kwh": "kWh", "usd": "USD", "gpu_hours": "GPU-h"}
        return ", ".join(f"{v:g} {units[k]}" for k, v in self.limits().items())

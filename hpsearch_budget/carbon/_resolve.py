"""One resolver from user options to an intensity provider, used by every CLI and API entry.

>>> from datetime import UTC, datetime
>>> now = datetime.now(UTC)
>>> resolve_intensity().at(now).label  # doctest: +ELLIPSIS
'IEA Global Energy & CO2 Status Report 2019 ... (2018)'
>>> round(resolve_intensity(lbs_per_kwh=0.954).at(now).g_per_kwh, 1)
432.7
>>> resolve_intensity(region="FR", g_per_kwh=50)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
hpsearch_budget.errors.HpauditInputError: give at most one intensity option, got region and ...
"""

from __future__ import annotations

from pathlib import Path

from hpsearch_budget.carbon._regions import default_intensity, find_region
from hpsearch_budget.carbon._series import TimeSeriesIntensity
from hpsearch_budget.carbon.intensity import IntensityProvider, StaticIntensity
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import lbs_per_kwh_to_g_per_kwh


def resolve_intensity(
    region: str | None = None,
    g_per_kwh: float | None = None,
    lbs_per_kwh: float | None = None,
    series: str | Path | None = None,
) -> IntensityProvider:
    """The provider for at most one of: a region code, a number in g/kWh or lbs/kWh, or a CSV
    time series. None given: the world average (with its source and year)."""
    given = {
        name: value
        for name, value in (
            ("region", region),
            ("g_per_kwh", g_per_kwh),
            ("lbs_per_kwh", lbs_per_kwh),
            ("series", series),
        )
        if value is not None
    }
    if len(given) > 1:
        raise HpauditInputError(f"give at most one intensity option, got {' and '.join(given)}")
    if region is not None:
        return StaticIntensity(find_region(region).intensity)
    if g_per_kwh is not None:
        return StaticIntensity.of(_number(g_per_kwh, "g_per_kwh"), "user-supplied")
    if lbs_per_kwh is not None:
        lbs = _number(lbs_per_kwh, "lbs_per_kwh")
        source = f"user-supplied ({lbs:g} lbs/kWh)"
        return StaticIntensity.of(lbs_per_kwh_to_g_per_kwh(lbs), source)
    if series is not None:
        return TimeSeriesIntensity.from_csv(series)
    return StaticIntensity(default_intensity())


def _number(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise HpauditInputError(f"{name} must be a number >= 0, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise HpauditInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return number

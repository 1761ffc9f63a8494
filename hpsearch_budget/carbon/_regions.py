"""The shipped grid-intensity table: countries (ISO 3166 alpha-2 / alpha-3) and cloud regions.

``data/grid_intensity.csv`` is built by ``scripts/build_intensity_table.py`` from the data inside
the codecarbon wheel (Our World in Data, Google Cloud, EPA eGRID, ...); every row keeps its
source and year. Codes are case-insensitive; a cloud region may be prefixed by its provider
(``aws:us-east-1``).

>>> region_intensity("FR").g_per_kwh == region_intensity("fra").g_per_kwh
True
>>> region_intensity("europe-west4").label
'Google Cloud region carbon data, grid intensity (via codecarbon 3.3.2) (2023)'
>>> default_intensity().g_per_kwh
475.0
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

from hpsearch_budget.carbon.intensity import Intensity
from hpsearch_budget.errors import UnknownRegionError

_TABLE = "grid_intensity.csv"
_WORLD = "WORLD"


@dataclass(frozen=True, slots=True)
class Region:
    """One row of the table."""

    code: str  # alpha-3 for countries, the provider's name for cloud regions
    alias: str  # alpha-2 for countries, else ""
    kind: str  # "country" | "cloud" | "world"
    provider: str  # "aws" | "gcp" | "azure" | ""
    name: str
    country: str  # ISO alpha-3 of the location
    intensity: Intensity


@cache
def regions() -> tuple[Region, ...]:
    """Every row of the shipped table, world average first."""
    text = resources.files("hpsearch_budget.carbon").joinpath("data", _TABLE).read_text("utf-8")
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        year = int(row["year"]) if row["year"] else None
        intensity = Intensity(float(row["g_per_kwh"]), row["source"], year)
        out.append(
            Region(
                row["code"],
                row["alias"],
                row["kind"],
                row["provider"],
                row["name"],
                row["country"],
                intensity,
            )
        )
    return tuple(out)


@cache
def _index() -> dict[str, Region]:
    index: dict[str, Region] = {}
    for region in regions():
        keys = [region.code, region.alias]
        if region.provider:
            keys += [f"{region.provider}:{region.code}", f"{region.provider}/{region.code}"]
        for key in keys:
            if key:
                index[key.lower()] = region
    return index


def find_region(code: str) -> Region:
    """The table row for ``code``; :class:`UnknownRegionError` says how to list valid codes."""
    if not isinstance(code, str):  # resolve_intensity(400): a number meant as g/kWh
        raise UnknownRegionError(
            f"region must be a code such as 'FR' or 'us-east-1', got {type(code).__name__} "
            f"{code!r}; for an intensity in g CO2e/kWh pass g_per_kwh={code!r}"
        )
    key = code.strip().lower()
    region = _index().get(key)
    if region is None:
        close = difflib.get_close_matches(key, list(_index()), n=3, cutoff=0.75)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownRegionError(
            f"unknown region {code!r}{hint}: run `hpaudit regions` to list valid codes "
            "(ISO 3166 country codes such as FR or FRA, cloud regions such as us-east-1, "
            "europe-west4, eastus), or pass an intensity with --g-per-kwh"
        )
    return region


def region_intensity(code: str) -> Intensity:
    """Grid intensity of a country (``"FR"``, ``"FRA"``) or cloud region (``"us-east-1"``)."""
    return find_region(code).intensity


def default_intensity() -> Intensity:
    """The world-average grid intensity, the default when no region or number is given."""
    return _index()[_WORLD.lower()].intensity


def regions_with(label: str, g_per_kwh: float) -> tuple[Region, ...]:
    """The table rows whose intensity has this label and value: where a figure the ledger
    recorded (label and g/kWh, not the region code) can have come from. Several rows share
    some figures (a cloud region takes its state's or country's), so callers use only what
    all of them agree on."""
    return tuple(
        r for r in _by_label().get(label, ()) if math.isclose(r.intensity.g_per_kwh, g_per_kwh)
    )


@cache
def _by_label() -> dict[str, list[Region]]:
    by_label: dict[str, list[Region]] = {}
    for region in regions():
        by_label.setdefault(region.intensity.label, []).append(region)
    return by_label

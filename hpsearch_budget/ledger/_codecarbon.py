"""Ledger entries in the layout of CodeCarbon's ``emissions.csv``.

One row per window, with the columns of CodeCarbon's ``EmissionsData`` (3.3.2, which added
``water_consumed``, the ``*_utilization_percent`` columns, ``ram_used_gb`` and ``wue`` to v2's),
in its order, so dashboards and scripts built for CodeCarbon can read a sweep. What each filled
column holds, as CodeCarbon means it:

- ``timestamp``: when the window ended (a running one: its last checkpoint) in the local time of
  the machine that exports, as CodeCarbon writes its own (``datetime.now()``), but with the UTC
  offset, so that files from machines in other zones still line up.
- ``project_name`` (project, else study), ``run_id`` (trial key), ``experiment_id`` (study),
  ``duration`` (s), ``emissions`` (kg CO2e), ``emissions_rate`` (kg/s).
- ``cpu_power`` / ``gpu_power`` / ``ram_power``: the window's average power in W, its energy in
  each domain over its duration (CodeCarbon 3.x writes the mean of its power samples). Power is
  at the devices, without PUE, as CodeCarbon's is.
- ``cpu_energy`` / ``gpu_energy`` / ``ram_energy`` (from the ``cpu*`` / ``gpu*`` / ``ram`` and
  ``dram*`` domains) and ``energy_consumed`` in kWh *including PUE*, as CodeCarbon writes them
  (its tracker multiplies each component's energy by its ``pue``), so the three add up to
  ``energy_consumed`` when every domain is one of them.
- ``country_name``, ``country_iso_code`` (alpha-3), ``cloud_provider``, ``cloud_region`` and
  ``on_cloud`` (``Y``: the intensity is a cloud region's, ``N``: a country's): the ledger stores
  the grid intensity it charged (value and source label), not the region code, so these come
  from the rows of the shipped intensity table that have that figure, and only where all of
  them agree (a cloud region that takes its country's figure gives the country, not the
  region). A user-supplied intensity or a time series leaves them empty.
- ``gpu_count``, ``tracking_mode`` (``process``: energy attributed to the trial) and ``pue``.

Left empty, because the ledger does not know them: ``region`` (sub-national), water, utilisation,
RAM size and use, coordinates, OS / Python / CodeCarbon versions, hardware models, CPU count.

CodeCarbon has no column for how energy was obtained nor for a window's status, so two are added
last: ``hpaudit_energy_source`` (``measured``, ``estimated``, ...: an estimate stays labelled as
one in every export) and ``hpaudit_status`` (``running`` and ``killed`` rows hold the cost so
far, not a finished run's). Readers of CodeCarbon's files select their columns by name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import pandas as pd

from hpsearch_budget.carbon._regions import regions, regions_with
from hpsearch_budget.units import g_to_kg, j_to_kwh

CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions",
    "emissions_rate", "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy",
    "ram_energy", "energy_consumed", "water_consumed", "country_name", "country_iso_code",
    "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
    "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue",
    "hpaudit_energy_source", "hpaudit_status",
)  # fmt: skip

#: Which energy domains make up each of CodeCarbon's three components.
_COMPONENTS: dict[str, Callable[[str], bool]] = {
    "cpu": lambda d: d.startswith("cpu"),
    "gpu": lambda d: d.startswith("gpu"),
    "ram": lambda d: d == "ram" or d.startswith("dram"),
}


def codecarbon_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Ledger entries in the columns of CodeCarbon's ``emissions.csv``."""
    rows = [_row(r) for r in frame.itertuples(index=False)]
    return pd.DataFrame.from_records(rows, columns=list(CODECARBON_COLUMNS))


def _row(r: Any) -> dict[str, Any]:
    domains: dict[str, float] = r.energy_by_domain or {}
    emissions_kg = g_to_kg(r.co2e_g)
    ended = r.ended_at if not pd.isna(r.ended_at) else r.updated_at
    row: dict[str, Any] = {
        # local time with its offset; astimezone() applies the zone's rule for that instant
        "timestamp": ended.to_pydatetime(warn=False).astimezone().isoformat(timespec="seconds"),
        "project_name": _text(r.project) or r.study,
        "run_id": r.trial_key,
        "experiment_id": r.study,
        "duration": r.wall_s,
        "emissions": emissions_kg,
        "emissions_rate": emissions_kg / r.wall_s if r.wall_s > 0 else 0.0,
        "energy_consumed": j_to_kwh(r.energy_j) * r.pue,
        "gpu_count": len(r.devices),
        "tracking_mode": "process",
        "pue": r.pue,
        "hpaudit_energy_source": _text(r.source) or "none",
        "hpaudit_status": r.status,
    }
    for name, match in _COMPONENTS.items():
        joules = sum(j for d, j in domains.items() if match(d))
        row[f"{name}_energy"] = j_to_kwh(joules) * r.pue
        # no duration (a window not yet checkpointed): no average power to give
        row[f"{name}_power"] = joules / r.wall_s if r.wall_s > 0 else None
    row.update(_location(_text(r.intensity_source), r.g_per_kwh))
    return row


def _location(label: str | None, g_per_kwh: float) -> dict[str, str]:
    """CodeCarbon's location columns that every table row with this intensity agrees on."""
    found = regions_with(label, g_per_kwh) if label else ()
    places = [r for r in found if r.kind in ("country", "cloud")]
    if not places or len(places) != len(found):  # none, or the world average among them
        return {}
    out: dict[str, str] = {}
    if len(countries := {r.country for r in places}) == 1 and (iso := countries.pop()):
        out.update(country_iso_code=iso, country_name=_country_name(iso))
    if len(kinds := {r.kind for r in places}) == 1:
        out["on_cloud"] = "Y" if kinds == {"cloud"} else "N"
    if len(places) == 1 and places[0].kind == "cloud":
        out.update(cloud_provider=places[0].provider, cloud_region=places[0].code)
    return out


@cache
def _country_name(iso: str) -> str:
    return next((r.name for r in regions() if r.kind == "country" and r.code == iso), "")


def _text(value: object) -> str | None:
    """A text cell, or None when missing: pandas' string columns hold NaN (truthy) there."""
    return None if value is None or pd.isna(value) else str(value)  # type: ignore[call-overload]

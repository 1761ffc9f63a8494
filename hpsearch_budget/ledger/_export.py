"""Export a ledger to CSV, Parquet, or CodeCarbon's ``emissions.csv`` layout, atomically.

The file is written next to its destination under a temporary name and renamed into place, so
a reader (or a crash) never sees half a file and an existing file is replaced whole or not at all.

CodeCarbon layout: one row per window, with the columns of CodeCarbon's ``emissions.csv``, in
its order (``EmissionsData`` of CodeCarbon 3.3.2, which added ``water_consumed``, the
``*_utilization_percent`` columns, ``ram_used_gb`` and ``wue`` to v2's), so dashboards and
scripts built for it can read a sweep. Filled: ``timestamp`` (window end, UTC),
``project_name`` (project, else study), ``run_id`` (trial key), ``experiment_id`` (study),
``duration`` (s), ``emissions`` (kg CO2e), ``emissions_rate`` (kg/s), ``cpu_energy`` /
``gpu_energy`` / ``ram_energy`` (from the ``cpu*`` / ``gpu*`` / ``ram`` and ``dram*`` domains),
``energy_consumed`` (the energy the emissions were computed from), ``gpu_count``,
``tracking_mode`` (``process``: energy attributed to the trial) and ``pue``. All energies are in
kWh *including PUE*, as CodeCarbon writes them (its tracker multiplies each component's energy
by its ``pue`` before adding it up), so ``cpu + gpu + ram`` adds up to ``energy_consumed`` when
every domain is one of those three.
Columns the ledger does not know (power draw, water, utilisation, location, hardware models)
are left empty.
CodeCarbon has no column for how energy was obtained, so one is added last,
``hpaudit_energy_source`` (``measured``, ``estimated``, ...): an estimate stays labelled as one
in every export (readers of CodeCarbon's files select their columns by name).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import g_to_kg, j_to_kwh

FORMATS = ("csv", "parquet", "codecarbon")
#: Times in every export and JSON listing: ISO 8601, UTC.
ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"

CODECARBON_COLUMNS = (
    "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions",
    "emissions_rate", "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy",
    "ram_energy", "energy_consumed", "water_consumed", "country_name", "country_iso_code",
    "region", "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
    "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
    "ram_total_size", "tracking_mode", "cpu_utilization_percent", "gpu_utilization_percent",
    "ram_utilization_percent", "ram_used_gb", "on_cloud", "pue", "wue",
    "hpaudit_energy_source",
)  # fmt: skip

_JSON_COLUMNS = ("energy_by_domain", "sources", "devices", "params", "values")


def flat_entries(frame: pd.DataFrame) -> pd.DataFrame:
    """``Ledger.entries()`` with dict / list columns as JSON text (for flat file formats)."""
    flat = frame.copy()
    for col in _JSON_COLUMNS:
        flat[col] = [None if v is None else json.dumps(v, sort_keys=True) for v in frame[col]]
    return flat


def codecarbon_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Ledger entries in the columns of CodeCarbon's ``emissions.csv``."""
    rows = []
    for r in frame.itertuples(index=False):
        domains: dict[str, float] = r.energy_by_domain or {}

        def kwh(
            match: Callable[[str], bool], domains: dict[str, float] = domains, pue: float = r.pue
        ) -> float:
            return j_to_kwh(sum(j for d, j in domains.items() if match(d))) * pue

        emissions_kg = g_to_kg(r.co2e_g)
        ended = r.ended_at if not pd.isna(r.ended_at) else r.updated_at
        rows.append(
            {
                "timestamp": ended.strftime("%Y-%m-%dT%H:%M:%S"),
                "project_name": _text(r.project) or r.study,
                "run_id": r.trial_key,
                "experiment_id": r.study,
                "duration": r.wall_s,
                "emissions": emissions_kg,
                "emissions_rate": emissions_kg / r.wall_s if r.wall_s > 0 else 0.0,
                "cpu_energy": kwh(lambda d: d.startswith("cpu")),
                "gpu_energy": kwh(lambda d: d.startswith("gpu")),
                "ram_energy": kwh(lambda d: d == "ram" or d.startswith("dram")),
                "energy_consumed": j_to_kwh(r.energy_j) * r.pue,
                "gpu_count": len(r.devices),
                "tracking_mode": "process",
                "pue": r.pue,
                "hpaudit_energy_source": _text(r.source) or "none",
            }
        )
    return pd.DataFrame.from_records(rows, columns=list(CODECARBON_COLUMNS))


def _text(value: object) -> str | None:
    """A text cell, or None when missing: pandas' string columns hold NaN (truthy) there."""
    return None if value is None or pd.isna(value) else str(value)  # type: ignore[call-overload]


def export_frame(frame: pd.DataFrame, out: str | os.PathLike[str], fmt: str) -> int:
    """Write ledger entries to ``out`` in ``fmt`` (csv | parquet | codecarbon), atomically.

    Returns the number of rows written.

    >>> import tempfile, os
    >>> from hpsearch_budget.ledger import Ledger
    >>> from hpsearch_budget.meters import Measurement
    >>> d = tempfile.mkdtemp()
    >>> ledger = Ledger(f"sqlite:///{d}/l.db")
    >>> _ = ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    >>> export_frame(ledger.entries(), os.path.join(d, "emissions.csv"), "codecarbon")
    1
    """
    if fmt not in FORMATS:
        raise HpauditInputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(out)
    if path.is_dir():
        raise HpauditInputError(f"--out {str(path)!r} is a directory; give a file name")
    if not path.parent.is_dir():
        raise HpauditInputError(
            f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist"
        )
    if fmt == "codecarbon":
        table, write = codecarbon_frame(frame), _write_csv
    elif fmt == "csv":
        table, write = flat_entries(frame), _write_csv
    else:
        table, write = flat_entries(frame), _write_parquet
    _atomic_write(path, lambda tmp: write(table, tmp))
    return len(table)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, date_format=ISO_UTC)


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise HpauditInputError(
            "parquet export needs pyarrow: pip install 'hpsearch_budget[parquet]'"
        ) from None
    table.to_parquet(path, index=False)


def is_special(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (a device such as
    ``/dev/null``, a named pipe): renaming a file over it would replace it."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    if is_special(path):
        # A device or pipe (/dev/null, /dev/stdout): written into; a rename would replace it.
        try:
            write(path)
        except OSError as error:
            raise HpauditInputError(f"cannot write {str(path)!r}: {error.strerror}") from None
        return
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise HpauditInputError(f"cannot write {str(path)!r}: {error.strerror}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; an export is an ordinary file
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:  # on disk before it takes the real name
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise HpauditInputError(f"cannot write {str(path)!r}: {error.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()

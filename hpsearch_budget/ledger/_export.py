"""Export a ledger to CSV, Parquet, JSON or CodeCarbon's ``emissions.csv`` layout, atomically.

The file is written next to its destination under a temporary name and renamed into place, so
a reader (or a crash) never sees half a file and an existing file is replaced whole or not at all.

csv, parquet and json hold the columns of :meth:`Ledger.entries`; times are ISO 8601 in UTC
(``Z``). JSON is an array of records, one per line: numbers as numbers, a missing value, NaN or
inf as null, and the dict / list columns (``energy_by_domain``, ``params``...) as JSON objects
and arrays where csv holds their JSON text. CodeCarbon's layout: see ``_codecarbon.py``.
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

from hpsearch_budget._json import json_safe
from hpsearch_budget._out_file import refuse_to_replace_input
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._codecarbon import codecarbon_frame

FORMATS = ("csv", "parquet", "json", "codecarbon")
#: Times in every export and JSON listing: ISO 8601, UTC.
ISO_UTC = "%Y-%m-%dT%H:%M:%S.%fZ"

_JSON_COLUMNS = ("energy_by_domain", "sources", "devices", "params", "values")
_TIMES = ("started_at", "updated_at", "ended_at")


def flat_entries(frame: pd.DataFrame) -> pd.DataFrame:
    """``Ledger.entries()`` with dict / list columns as JSON text (for flat file formats)."""
    flat = frame.copy()
    for col in _JSON_COLUMNS:
        flat[col] = [None if v is None else json.dumps(v, sort_keys=True) for v in frame[col]]
    return flat


def json_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``Ledger.entries()`` as JSON-ready records: times as ISO 8601 in UTC, missing values and
    non-finite numbers as None (the one conversion for every JSON the CLI writes)."""
    iso = {c: frame[c].dt.strftime(ISO_UTC) for c in _TIMES}
    records = frame.assign(**iso).astype(object).to_dict("records")
    return [{str(k): json_safe(v) for k, v in r.items()} for r in records]


def export_frame(frame: pd.DataFrame, out: str | os.PathLike[str], fmt: str) -> int:
    """Write ledger entries to ``out`` in ``fmt`` (csv | parquet | json | codecarbon), atomically.

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
    refuse_to_replace_input(path)
    if not path.parent.is_dir():
        raise HpauditInputError(
            f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist"
        )
    write = _WRITERS[fmt]
    _atomic_write(path, lambda tmp: write(frame, tmp))
    return len(frame)  # one row (record) per window in every format


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False, date_format=ISO_UTC)


def _write_json(frame: pd.DataFrame, path: Path) -> None:
    lines = [json.dumps(r, ensure_ascii=False, allow_nan=False) for r in json_records(frame)]
    # one record per line: a reader can diff or grep it; the whole file is one JSON array
    path.write_text("[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n", "utf-8")


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise HpauditInputError(
            "parquet export needs pyarrow: pip install 'hpsearch_budget[parquet]'"
        ) from None
    table.to_parquet(path, index=False)


_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "csv": lambda frame, path: _write_csv(flat_entries(frame), path),
    "parquet": lambda frame, path: _write_parquet(flat_entries(frame), path),
    "json": _write_json,
    "codecarbon": lambda frame, path: _write_csv(codecarbon_frame(frame), path),
}


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

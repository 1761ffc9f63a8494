"""Export a ledger to CSV, Parquet, JSON or CodeCarbon's ``emissions.csv`` layout, atomically.

The file is written next to its destination under a temporary name and renamed into place, so
a reader (or a crash) never sees half a file and an existing file is replaced whole or not at all.

csv, parquet and json hold the columns of :meth:`Ledger.entries`; times are ISO 8601 in UTC
(``Z``). JSON is an array of records, one per line: numbers as numbers, a missing value, NaN or
inf as null, and the dict / list columns (``energy_by_domain``, ``params``...) as JSON objects
and arrays where csv holds their JSON text. CodeCarbon's layout: see ``_codecarbon.py``.

csv, json and codecarbon are written a chunk of rows at a time (:func:`export_chunks`, fed by
:meth:`Ledger.entry_chunks`), so memory stays bounded whatever the ledger's size; the file is
the same as one written from all the rows at once. Parquet is written from every row at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
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
    return export_chunks([frame], out, fmt)


def export_chunks(chunks: Iterable[pd.DataFrame], out: str | os.PathLike[str], fmt: str) -> int:
    """:func:`export_frame` of the rows of ``chunks`` (``Ledger.entry_chunks()``: at least one
    frame, the first with the columns even when empty), one chunk in memory at a time (parquet:
    all of them). Returns the number of rows written."""
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
    written = [0]  # one row (record) per window in every format

    def counted() -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            written[0] += len(chunk)
            yield chunk

    _atomic_write(path, lambda tmp: write(counted(), tmp))
    return written[0]


def _write_csv(tables: Iterable[pd.DataFrame], path: Path) -> None:
    # the header once, then each chunk appended: the bytes of one to_csv of all the rows
    for i, table in enumerate(tables):
        table.to_csv(path, mode="a" if i else "w", header=not i, index=False,
                     date_format=ISO_UTC)  # fmt: skip


def _write_json(frames: Iterable[pd.DataFrame], path: Path) -> None:
    # one record per line: a reader can diff or grep it; the whole file is one JSON array
    with open(path, "w", encoding="utf-8") as fh:
        sep = "[\n"
        for frame in frames:
            for record in json_records(frame):
                fh.write(sep + json.dumps(record, ensure_ascii=False, allow_nan=False))
                sep = ",\n"
        fh.write("[]\n" if sep == "[\n" else "\n]\n")


def _write_parquet(frames: Iterable[pd.DataFrame], path: Path) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise HpauditInputError(
            "parquet export needs pyarrow: pip install 'hpsearch_budget[parquet]'"
        ) from None
    # In memory: a chunk whose text column is all missing has no type to write it with.
    # infer_objects: text columns typed as in one frame of all the rows (str, not object)
    table = flat_entries(pd.concat(list(frames), ignore_index=True).infer_objects())
    table.to_parquet(path, index=False)


_WRITERS: dict[str, Callable[[Iterable[pd.DataFrame], Path], None]] = {
    "csv": lambda frames, path: _write_csv(map(flat_entries, frames), path),
    "parquet": _write_parquet,
    "json": _write_json,
    "codecarbon": lambda frames, path: _write_csv(map(codecarbon_frame, frames), path),
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

"""An output path must never replace what a report or an export is read from.

A report or an export is text, JSON or Parquet, never a database: an existing SQLite file at
``--out`` is a ledger or an Optuna study typed in the wrong place, and renaming the new file over
it would lose every row it holds. The same goes for a journal file given as the source.

>>> import pathlib, sqlite3, tempfile
>>> db = pathlib.Path(tempfile.mkdtemp()) / "hpaudit.db"
>>> sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
>>> refuse_to_replace_input(db)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
hpsearch_budget.errors.HpauditInputError: --out '...hpaudit.db' is a SQLite database (a ledger ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hpsearch_budget.errors import HpauditInputError

# Every SQLite database file starts with these 16 bytes (https://sqlite.org/fileformat.html).
_SQLITE_HEADER = b"SQLite format 3\x00"


def refuse_to_replace_input(out: str | os.PathLike[str], sources: Iterable[str] = ()) -> None:
    """Raise :class:`HpauditInputError` if ``out`` is an existing SQLite database or the same
    file as one of ``sources`` (paths or URLs; only local files are compared)."""
    path = Path(out)
    if not path.is_file():  # new, a folder, or a device such as /dev/null: nothing to lose
        return
    try:
        database = is_sqlite_file(path)
    except OSError:  # unreadable: the write itself will say what is wrong
        database = False
    if database:
        raise HpauditInputError(
            f"--out {str(path)!r} is a SQLite database (a ledger or an Optuna study?) and was "
            "left as it is; name a new file to write"
        )
    for source in sources:
        if Path(source).is_file() and os.path.samefile(source, path):
            raise HpauditInputError(
                f"--out {str(path)!r} is the file the report is read from and was left as it "
                "is; name a new file to write"
            )


def is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` holds a SQLite database (its header); OSError if it cannot be read."""
    with path.open("rb") as f:
        return f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER

"""SQLite fast path: the hot per-trial writes through the sqlite3 driver.

The writes every trial makes (open, checkpoint, finalise a row this process wrote last) run the
SQL SQLAlchemy compiles for them, through sqlite3 directly: SQLAlchemy's ~0.1 ms of Python per
statement was most of their cost. Same statements, same transactions (BEGIN IMMEDIATE), same
revision guards; the caller falls back to the SQLAlchemy path when a guard does not match.
The PostgreSQL counterpart is :mod:`hpsearch_budget.ledger._pg`.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import _schema
from hpsearch_budget.ledger._checks import within
from hpsearch_budget.ledger._scope import Scope
from hpsearch_budget.ledger._statements import (
    FINAL_COLUMNS,
    MISSED_INTERVALS,
    W,
    scope_params,
    sums_statement,
)

SQLITE_NAMED = sqlite_dialect.dialect(paramstyle="named")
H = _schema.chain_heads.name
SQLITE_INSERT = (
    f"INSERT INTO {W.name} ({', '.join(FINAL_COLUMNS)}) "
    f"VALUES ({', '.join(f':{c}' for c in FINAL_COLUMNS)})"
)
SQLITE_HEAD = f"SELECT seq, head_hash FROM {H} WHERE study = :s"
SQLITE_HEAD_UPDATE = f"UPDATE {H} SET seq = :v_seq, head_hash = :v_head_hash WHERE study = :s"
SQLITE_HEAD_INSERT = f"INSERT INTO {H} (study, seq, head_hash) VALUES (:s, :v_seq, :v_head_hash)"


@functools.lru_cache(maxsize=64)
def sqlite_sql(stmt: Any) -> tuple[str, dict[str, Any]]:
    """A cached statement as SQLite SQL with named parameters, and its literal parameters."""
    compiled = stmt.compile(dialect=SQLITE_NAMED)
    return str(compiled), dict(compiled.params)


def sqlite_fits(
    db: sqlite3.Connection,
    amount: Cost,
    limits: Sequence[tuple[Scope, Cost]],
    now: float,
    sums: SqliteSums,
) -> bool:
    """:func:`_reservations.fits` on a sqlite3 connection (inside BEGIN IMMEDIATE), at ``now``;
    ``sums`` reads the spent and committed figures incrementally."""
    for scope, limit in limits:
        spent, committed = sums.read(db, scope, now)
        if not within(spent + committed + amount, limit):
            return False
    return True


_SPENT = ("energy_j", "co2e_g", "usd", "gpu_s")
_READ = ("id", "status", "updated_unix_s", "checkpoint_interval_s", *_SPENT,
         *(f"reserved_{c}" for c in _SPENT))  # fmt: skip
_SCOPE_SQL = {
    "s_study": "+study = :s_study",
    "s_project": "+project = :s_project",
    "s_user": "+user_name = :s_user",
    "s_since": "+started_unix_s >= :s_since",
    "s_until": "+started_unix_s < :s_until",
}


_NEWEST = f"SELECT max(id) FROM {W.name}"


@functools.lru_cache(maxsize=64)
def _rows_after(keys: tuple[str, ...], first: bool = False) -> str:
    """SQL: the rows of a scope above a low-water mark of ids, oldest first. The scope's
    columns are written ``+column`` so that SQLite walks the id range (few rows) instead of
    the study's index (all of the study's rows). ``first``: no mark yet, so the id range is
    the whole ledger: the scope's own index (study, project, user, time) finds its rows."""
    scope = (_SCOPE_SQL[k].removeprefix("+") if first else _SCOPE_SQL[k] for k in keys)
    where = " AND ".join(["id > :low", *scope])
    return f"SELECT {', '.join(_READ)} FROM {W.name} WHERE {where} ORDER BY id"


class SqliteSums:
    """Spent and committed per scope, reading only the rows that can still change.

    Summing a study's every row at every trial start grew with the study (0.5 ms at 200 rows,
    5 ms at 8,000). But a finished row never changes its cost, and under SQLite's one write
    lock ids are committed in order, so below the oldest row seen running (the low-water
    mark) nothing can change or appear: those rows are summed once and kept. Each read
    fetches the scope's rows above the mark (the running ones and those after them), inside
    the caller's transaction. A ledger that is edited by hand is for :meth:`verify`, not
    for this cache; rows are never deleted by the library. Reads in concurrent read
    transactions of one process may each leave their mark; every mark covers only rows
    finished in the snapshot it came from, so any of them is sound (an older snapshot that
    uses a newer mark counts those rows' final cost, never twice, never not at all).
    When none of the scope's rows is running, the mark moves to the newest id in the ledger,
    not only the scope's newest row: the rows between belong to other scopes, and walking
    them again at every read cost a study whose rows are not the ledger's newest a whole
    scan per read (56 ms at 300,000 rows).
    """

    def __init__(self) -> None:
        # scope key -> (low-water mark, cost of the scope's rows at or below it)
        self._marks: dict[tuple[tuple[str, Any], ...], tuple[int, list[float]]] = {}

    def read(self, db: sqlite3.Connection, scope: Scope, now: float) -> tuple[Cost, Cost]:
        params = scope_params(scope)
        key = tuple(sorted(params.items()))
        low, below = self._marks.get(key, (0, [0.0, 0.0, 0.0, 0.0]))
        sql = _rows_after(tuple(k for k, _ in key), first=low == 0)
        rows = db.execute(sql, {**params, "low": low}).fetchall()
        spent, committed = list(below), [0.0, 0.0, 0.0, 0.0]
        settled, mark, settling = list(below), low, True
        try:
            for row in rows:
                running = row[1] == "running"
                for i in range(4):
                    spent[i] += row[4 + i]
                if running and row[2] >= now - MISSED_INTERVALS * row[3]:  # alive (_statements)
                    for i in range(4):
                        committed[i] += max(0.0, row[8 + i] - row[4 + i])
                settling = settling and not running
                if settling:  # finished, as is every row before it: below the mark from now on
                    for i in range(4):
                        settled[i] += row[4 + i]
                    mark = row[0]
        except TypeError:  # text where a number belongs: SQLite keeps what a hand edit writes
            bad = next(r for r in rows if not all(isinstance(v, int | float) for v in r[2:]))
            raise LedgerError(
                f"ledger row id {bad[0]} holds text where a number belongs: it was edited by "
                "hand; restore the ledger from a backup"
            ) from None
        if settling:  # nothing of the scope runs: the ledger's newer rows are others'
            mark = max(mark, db.execute(_NEWEST).fetchone()[0] or 0)
        self._marks[key] = (mark, settled)
        return Cost(*spent), Cost(*committed)


def sqlite_insert(db: sqlite3.Connection, row: Mapping[str, Any]) -> int:
    key = db.execute(SQLITE_INSERT, {c: row.get(c) for c in FINAL_COLUMNS}).lastrowid
    assert key is not None  # a single-row insert always has one
    return int(key)


def sqlite_sums(db: sqlite3.Connection, scope: Scope, now: float) -> tuple[Cost, Cost]:
    """Spent and committed of ``scope`` summed over all its rows in one statement (what
    :class:`SqliteSums` must always agree with; the tests hold it to that)."""
    stmt, params = sums_statement(scope)
    sql, defaults = sqlite_sql(stmt)
    v = [float(x) for x in db.execute(sql, {**defaults, **params, "now": now}).fetchone()]
    return Cost(*v[:4]), Cost(*v[4:])


@contextlib.contextmanager
def sqlite_write(engine: sa.Engine) -> Iterator[sqlite3.Connection]:
    """A write transaction on a pooled sqlite3 connection: BEGIN IMMEDIATE (the write lock
    up front, as :func:`_engine.write_txn`), COMMIT, or ROLLBACK on any error."""
    raw = engine.raw_connection()
    try:
        db: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        raw.close()

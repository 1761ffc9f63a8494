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
from hpsearch_budget.ledger import _schema
from hpsearch_budget.ledger._checks import within
from hpsearch_budget.ledger._scope import Scope
from hpsearch_budget.ledger._statements import FINAL_COLUMNS, W, sums_statement

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
    db: sqlite3.Connection, amount: Cost, limits: Sequence[tuple[Scope, Cost]], now: float
) -> bool:
    """:meth:`Ledger._fits` on a sqlite3 connection (inside BEGIN IMMEDIATE), at ``now``."""
    for scope, limit in limits:
        spent, committed = sqlite_sums(db, scope, now)
        if not within(spent + committed + amount, limit):
            return False
    return True


def sqlite_insert(db: sqlite3.Connection, row: Mapping[str, Any]) -> int:
    key = db.execute(SQLITE_INSERT, {c: row.get(c) for c in FINAL_COLUMNS}).lastrowid
    assert key is not None  # a single-row insert always has one
    return int(key)


def sqlite_sums(db: sqlite3.Connection, scope: Scope, now: float) -> tuple[Cost, Cost]:
    """:meth:`Ledger._sums` on a sqlite3 connection."""
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

"""Reservations: what a scope has spent and committed, whether an amount fits, taking it.

The caller holds the reservations lock (:func:`_engine.lock_reservations`, or SQLite's write
lock) around a check and its write, so racing workers can never jointly exceed a limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from hpsearch_budget.budget import Cost
from hpsearch_budget.ledger._checks import within
from hpsearch_budget.ledger._scope import Scope
from hpsearch_budget.ledger._sqlite import SqliteSums
from hpsearch_budget.ledger._statements import RESERVE, sums_statement

COST_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")


def with_reservation(row: Mapping[str, Any], amount: Cost) -> dict[str, Any]:
    """A new window's row holding ``amount`` as its first reservation."""
    return {**row, **{f"reserved_{f}": float(getattr(amount, f)) for f in COST_FIELDS}}


def reserved(row: Mapping[str, Any]) -> tuple[float, ...]:
    """The window's reservation, per cost field."""
    return tuple(float(row[f"reserved_{f}"]) for f in COST_FIELDS)


def reserved_after(row: Mapping[str, Any], amount: Cost) -> tuple[float, ...]:
    """The window's reservation once :func:`add_reservation` added ``amount`` (the same
    additions in doubles as the database makes, so the two compare exactly)."""
    return tuple(float(row[f"reserved_{f}"]) + float(getattr(amount, f)) for f in COST_FIELDS)


def sums(conn: Connection, scope: Scope, now: float, sqlite_sums: SqliteSums) -> tuple[Cost, Cost]:
    """Spent and committed of ``scope`` at ``now``, in the caller's transaction (on SQLite
    read incrementally through ``sqlite_sums``)."""
    if conn.dialect.name == "sqlite":  # only rows that can change are read
        db: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        return sqlite_sums.read(db, scope, now)
    # One statement, so spent and committed come from one snapshot even under PostgreSQL's
    # READ COMMITTED: a window finishing concurrently is counted once, never twice or never.
    stmt, params = sums_statement(scope)
    values = conn.execute(stmt, {**params, "now": now}).one()
    v = [float(x) for x in values]
    return Cost(*v[:4]), Cost(*v[4:])


def fits(
    conn: Connection,
    amount: Cost,
    limits: Sequence[tuple[Scope, Cost]],
    now: float,
    sqlite_sums: SqliteSums,
) -> bool:
    """Whether ``amount`` fits every limit at ``now`` (the caller holds the reservations lock)."""
    for scope, limit in limits:
        spent, committed = sums(conn, scope, now, sqlite_sums)
        if not within(spent + committed + amount, limit):
            return False
    return True


def add_reservation(conn: Connection, window_id: int, amount: Cost) -> None:
    """Add ``amount`` to the window's reservation (a new revision of its row)."""
    conn.execute(
        RESERVE,
        {
            "w_id": int(window_id),
            "a_energy_j": amount.energy_j,
            "a_co2e_g": amount.co2e_g,
            "a_usd": amount.usd,
            "a_gpu_s": amount.gpu_s,
        },
    )

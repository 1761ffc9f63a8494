"""Reaping: finalising as ``killed`` the running windows whose writer went silent.

Each silent window is reaped in a short transaction of its own and only if it is still
running and still silent when locked, so a window that checkpoints meanwhile is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hpsearch_budget.ledger import _chain, _engine, _pg
from hpsearch_budget.ledger._linking import linked, next_link, store_head
from hpsearch_budget.ledger._statements import (
    FINAL_COLUMNS,
    MISSED_INTERVALS,
    UNLINKED,
    W,
    params,
    update,
)


def stale(t: float) -> sa.ColumnElement[bool]:
    """True of a row silent at ``t`` for :data:`MISSED_INTERVALS` checkpoint intervals."""
    return W.c.updated_unix_s < t - MISSED_INTERVALS * W.c.checkpoint_interval_s


def listed(windows: Sequence[int]) -> sa.ColumnElement[bool]:
    """True of the rows ``windows`` names: windows known dead, reaped whatever their silence."""
    return W.c.id.in_([int(w) for w in windows])


def silent_windows(engine: Engine, silent: sa.ColumnElement[bool]) -> list[tuple[int, str]]:
    """Ids and studies of the running windows ``silent`` is true of, oldest first."""
    with _engine.read_txn(engine) as conn:
        candidates = conn.execute(
            sa.select(W.c.id, W.c.study)
            .where(W.c.status == "running", UNLINKED, silent)
            .order_by(W.c.id)
        ).all()
    return [(window_id, study) for window_id, study in candidates]


def reap_linked(
    engine: Engine,
    window_id: int,
    study: str,
    silent: sa.ColumnElement[bool],
    cache: dict[int, dict[str, Any]],
) -> int:
    """Finalise one silent window as killed (if it still is) and link it, in one write
    transaction; 1 if it was reaped. ``cache``: the ledger's rows, the reaped one dropped."""
    with _engine.write_txn(engine) as conn:
        # Chain head first, then the row: the order finalize() locks them in, so
        # the two can never deadlock on PostgreSQL.
        link = next_link(conn, study)
        stmt = sa.select(W).where(W.c.id == window_id, W.c.status == "running", silent)
        if conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).mappings().first()
        if row is None:  # it checkpointed, finished or was reaped meanwhile
            return 0
        final = {**row, "status": "killed", "ended_unix_s": row["updated_unix_s"]}
        final = linked({**final, "rev": int(row["rev"]) + 1}, link)
        values = {**params(window_id, final), "w_rev": row["rev"]}
        conn.execute(update(FINAL_COLUMNS), values)  # row locked: it matches
        store_head(conn, link, final["row_hash"])
        cache.pop(int(window_id), None)
        return 1


def reap_sealed(
    engine: Engine,
    window_id: int,
    study: str,
    silent: sa.ColumnElement[bool],
    cache: dict[int, dict[str, Any]],
    link_sealed: Callable[..., int],
) -> int:
    """PostgreSQL: seal one silent window as killed (if it still is), then link it with
    ``link_sealed`` (:meth:`Ledger._link_sealed`); 1 if it was reaped."""
    with _engine.single_statement(engine) as conn:
        stmt = sa.select(W).where(W.c.id == window_id, W.c.status == "running", silent)
        row = conn.execute(stmt).mappings().first()
        if row is None:  # it checkpointed, finished or was reaped meanwhile
            return 0
        final = {**row, "status": "killed", "ended_unix_s": row["updated_unix_s"]}
        final.update(rev=int(row["rev"]) + 1, seq=None, prev_hash=None)
        final["row_hash"] = _chain.seal(final)
        values = {**params(window_id, final), "w_rev": row["rev"]}
        if _pg.update_running(conn, FINAL_COLUMNS, values) != 1:
            return 0  # it checkpointed (new revision) since it was read
        cache.pop(window_id, None)
        link_sealed(conn, study, mine=final, what=f"window {window_id}")
        return 1

"""PostgreSQL fast path: the statements every finished row runs, as fixed SQL through psycopg.

SQLAlchemy spends ~100 µs of Python on each statement it executes, even a cached one, against
~50 µs for psycopg itself; a finished row runs six statements. With 8 writer processes and their
8 server backends sharing 2 cores, that overhead was the largest CPU cost per row. So the
per-row statements (open a window, update it, seal it, link sealed rows) are written once here
as SQL text with server-side prepared plans (``prepare=True``) and run on the driver connection
of a pooled SQLAlchemy connection. Everything else (schema, reads, reservations, reap) stays in
SQLAlchemy Core. Column lists come from :mod:`_schema`, so the two cannot drift apart.

The caller runs these inside its own connection / transaction context and turns
``psycopg.Error`` into a ``LedgerError`` (:func:`_engine.translate`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from hpsearch_budget.ledger import _engine, _schema

W = _schema.windows
_COLUMNS = tuple(c.name for c in W.columns)
_INSERTED = tuple(c for c in _COLUMNS if c != "id")

_INSERT = (
    f"INSERT INTO {W.name} ({', '.join(_INSERTED)}) "
    f"VALUES ({', '.join(f'%({c})s' for c in _INSERTED)}) RETURNING id"
)
# The head and the sealed rows in one read (one snapshot, taken once the chain lock is ours).
_READ_CHAIN = (
    f"SELECT h.seq, h.head_hash, {', '.join(f'w.{c}' for c in _COLUMNS)} "
    f"FROM (SELECT 1) AS one LEFT JOIN {_schema.chain_heads.name} AS h ON h.study = %(s)s "
    f"LEFT JOIN {W.name} AS w ON w.study = %(s)s AND w.seq IS NULL AND w.status <> 'running' "
    "ORDER BY w.id"
)
_ANY_SEALED = (
    f"SELECT EXISTS (SELECT 1 FROM {W.name} WHERE study = %s AND seq IS NULL "
    "AND status <> 'running' AND NOT (id = ANY(%s::bigint[])))"
)
# Every link and the head in one statement, for any number of rows (arrays); the head moves
# only if every row did (each still unlinked and finished). set_config(..., true) is SET LOCAL
# for this statement's own transaction: its commit does not wait for the WAL flush (a link lost
# in a server crash is made again from the durably committed seals).
_LINK_ROWS = f"""
WITH v AS (
    SELECT v.* FROM unnest(%(ids)s::bigint[], %(seqs)s::bigint[], %(prevs)s::text[],
                           %(hashes)s::text[]) AS v(id, seq, prev_hash, row_hash),
        set_config('synchronous_commit', 'off', true) AS fast
), linked AS (
    UPDATE {W.name} AS w SET seq = v.seq, prev_hash = v.prev_hash, row_hash = v.row_hash
    FROM v WHERE w.id = v.id AND w.seq IS NULL AND w.status <> 'running'
    RETURNING w.id
)
"""
_LINK_MOVING_HEAD = (
    _LINK_ROWS + f"UPDATE {_schema.chain_heads.name} SET seq = %(head_seq)s, "
    "head_hash = %(head_hash)s WHERE study = %(s)s AND (SELECT count(*) FROM linked) = %(n)s"
)
_LINK_NEW_HEAD = (
    _LINK_ROWS + f"INSERT INTO {_schema.chain_heads.name} (study, seq, head_hash) "
    "SELECT %(s)s, %(head_seq)s, %(head_hash)s WHERE (SELECT count(*) FROM linked) = %(n)s"
)


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection


def insert_window(conn: Connection, row: Mapping[str, Any]) -> int:
    """INSERT a new window (columns missing from ``row`` are NULL); its id."""
    values = {c: row.get(c) for c in _INSERTED}
    cur = _driver(conn).execute(_INSERT, values, prepare=True)
    return int(cur.fetchone()[0])


@functools.lru_cache(maxsize=16)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = %(v_{c})s" for c in columns)
    guard = "id = %(w_id)s AND status = 'running' AND rev = %(w_rev)s"
    return f"UPDATE {W.name} SET {sets} WHERE {guard}"


def update_running(conn: Connection, columns: tuple[str, ...], params: Mapping[str, Any]) -> int:
    """UPDATE a still-running window at a known revision (``_statements.update``); rows changed."""
    return int(_driver(conn).execute(_update_sql(columns), params, prepare=True).rowcount)


def chain_lock(conn: Connection, study: str, *, wait: bool) -> bool:
    """Take the study's chain lock (session-level): at once or not at all, or ``wait``."""
    a, b = _engine.chain_lock_key(study)
    fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
    row = _driver(conn).execute(f"SELECT {fn}(%s, %s)", (a, b), prepare=True).fetchone()
    return wait or bool(row[0])


def chain_unlock(conn: Connection, study: str) -> None:
    a, b = _engine.chain_lock_key(study)
    _driver(conn).execute("SELECT pg_advisory_unlock(%s, %s)", (a, b), prepare=True)


def read_chain(conn: Connection, study: str) -> tuple[tuple[int, str] | None, list[dict[str, Any]]]:
    """The study's chain head (None before its first link) and its sealed rows, oldest first."""
    rows = _driver(conn).execute(_READ_CHAIN, {"s": study}, prepare=True).fetchall()
    first = rows[0]
    head = None if first[0] is None else (int(first[0]), str(first[1]))
    pending = [dict(zip(_COLUMNS, r[2:], strict=True)) for r in rows if r[2] is not None]
    return head, pending


def any_sealed(conn: Connection, study: str, skip: Sequence[int]) -> bool:
    """Whether the study has sealed rows waiting for their link (other than ``skip``)."""
    row = _driver(conn).execute(_ANY_SEALED, (study, list(skip)), prepare=True).fetchone()
    return bool(row[0])


def link(
    conn: Connection,
    study: str,
    links: Sequence[tuple[int, int, str, str]],
    *,
    head_exists: bool,
) -> bool:
    """Write ``(id, seq, prev_hash, row_hash)`` links and move (or create) the head to the last
    one, in one statement; False (nothing written) if a row was no longer unlinked."""
    params = {
        "ids": [x[0] for x in links],
        "seqs": [x[1] for x in links],
        "prevs": [x[2] for x in links],
        "hashes": [x[3] for x in links],
        "n": len(links),
        "s": study,
        "head_seq": links[-1][1],
        "head_hash": links[-1][3],
    }
    stmt = _LINK_MOVING_HEAD if head_exists else _LINK_NEW_HEAD
    return int(_driver(conn).execute(stmt, params, prepare=True).rowcount) == 1

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
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
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
# What every new window holds (Ledger.open_window), written into the SQL as literals: psycopg
# then adapts 17 parameters fewer per opening, a tenth of a finished row's client CPU.
_OPENING: dict[str, Any] = {
    "status": "running", "ended_unix_s": None, "wall_s": 0.0, "step": None, "energy_j": 0.0,
    "energy_by_domain": "{}", "sources": "{}", "source": None, "gpu_s": 0.0, "co2e_g": 0.0,
    "usd": 0.0, "value": None, "values_json": None, "rev": 0, "seq": None,
    "prev_hash": None, "row_hash": None,
}  # fmt: skip
_VARYING = tuple(c for c in _INSERTED if c not in _OPENING)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


_INSERT_OPENING = (
    f"INSERT INTO {W.name} ({', '.join(_INSERTED)}) VALUES ("
    + ", ".join(_literal(_OPENING[c]) if c in _OPENING else f"%({c})s" for c in _INSERTED)
    + ") RETURNING id"
)
# The head and the sealed rows in one read (one snapshot, taken once the chain lock is ours).
_READ_CHAIN = (
    f"SELECT h.seq, h.head_hash, {', '.join(f'w.{c}' for c in _COLUMNS)} "
    f"FROM (SELECT 1) AS one LEFT JOIN {_schema.chain_heads.name} AS h ON h.study = %(s)s "
    f"LEFT JOIN {W.name} AS w ON w.study = %(s)s AND w.seq IS NULL AND w.status <> 'running' "
    "ORDER BY w.id"
)
# Release the chain lock and look for sealed rows left to link, in one round trip.
_UNLOCK_ANY_SEALED = (
    "SELECT pg_advisory_unlock(%s, %s), "
    f"EXISTS (SELECT 1 FROM {W.name} WHERE study = %s AND seq IS NULL "
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


class _Session:
    """What is kept with a driver connection: a cursor (``Connection.execute`` would make one
    per statement, a fifth of psycopg's own time per statement) and the names of the
    statements prepared on it for :func:`_prepared`."""

    __slots__ = ("cursor", "driver", "prepared")

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.cursor = driver.cursor()
        self.prepared: set[bytes] = set()


def _session(conn: Connection) -> _Session:
    driver: Any = conn.connection.driver_connection
    kept = conn.info.get("hpaudit_pg")
    if kept is None or kept.driver is not driver or kept.cursor.closed:
        kept = conn.info["hpaudit_pg"] = _Session(driver)
    return kept  # type: ignore[no-any-return]


def _cursor(conn: Connection) -> Any:
    return _session(conn).cursor


# The two statements every finished row runs (its opening and its seal) skip psycopg's
# per-statement Python (~35 µs of ~90 µs): named statements prepared once per connection,
# run by libpq (psycopg.pq, the documented low-level interface) with parameters in text
# form. A statement with a value that is not None, str, int or float takes psycopg's path.
_ENCODE: dict[type, Callable[[Any], bytes | None]] = {
    str: str.encode,
    # repr() of a float is its shortest round-trip form; PostgreSQL reads inf and nan too.
    float: lambda v: repr(v).encode(),
    int: lambda v: str(v).encode(),
    type(None): lambda v: None,
}


def _texts(values: Iterable[Any]) -> list[bytes | None] | None:
    """The values as libpq text parameters; None if one is of another type (bool included)."""
    try:
        return [_ENCODE[type(v)](v) for v in values]
    except KeyError:
        return None


def _prepared(conn: Connection, sql: str, names: tuple[str, ...], values: Mapping[str, Any]) -> Any:
    """Run ``sql`` (``%(name)s`` placeholders, ``names`` in order) as a statement prepared once
    per connection, through libpq; its PGresult, or None (nothing run) if a value needs
    psycopg's adaptation."""
    texts = _texts(values[n] for n in names)
    if texts is None:
        return None
    from psycopg import pq

    name, raw = _numbered(sql, names)
    session = _session(conn)
    pgconn = session.driver.pgconn
    encoding = session.driver.info.encoding
    if name not in session.prepared:
        result = pgconn.prepare(name, raw.encode())
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise _failure(pgconn, result, encoding)
        session.prepared.add(name)
    result = pgconn.exec_prepared(name, texts)
    if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        raise _failure(pgconn, result, encoding)
    return result


def _failure(pgconn: Any, result: Any, encoding: str) -> Exception:
    """The error of a failed libpq result. A connection that broke under it (the server
    closed it) yields a result without SQLSTATE, which psycopg makes a plain DatabaseError:
    say OperationalError, as psycopg's own path does, so that the call is retried (_retry)."""
    import psycopg
    from psycopg import errors, pq

    error = errors.error_from_result(result, encoding=encoding)
    if pgconn.status == pq.ConnStatus.BAD and not isinstance(error, psycopg.OperationalError):
        return psycopg.OperationalError(str(error))
    return error


@functools.lru_cache(maxsize=16)
def _numbered(sql: str, names: tuple[str, ...]) -> tuple[bytes, str]:
    """A statement name for ``sql`` and ``sql`` with ``%(name)s`` placeholders as ``$n``."""
    for i, name in enumerate(names, 1):
        sql = sql.replace(f"%({name})s", f"${i}")
    return f"hpaudit_{hashlib.sha1(sql.encode()).hexdigest()[:16]}".encode(), sql


def insert_window(conn: Connection, row: Mapping[str, Any]) -> int:
    """INSERT a new window (columns missing from ``row`` are NULL); its id."""
    values = {c: row.get(c) for c in _INSERTED}
    if all(type(values[c]) is type(v) and values[c] == v for c, v in _OPENING.items()):
        result = _prepared(conn, _INSERT_OPENING, _VARYING, values)
        if result is not None:
            return int(result.get_value(0, 0))
        sql = _INSERT_OPENING
    else:
        sql = _INSERT
    cur = _cursor(conn).execute(sql, values, prepare=True)
    return int(cur.fetchone()[0])


@functools.lru_cache(maxsize=16)
def _update_sql(columns: tuple[str, ...]) -> str:
    sets = ", ".join(f"{c} = %(v_{c})s" for c in columns)
    guard = "id = %(w_id)s AND status = 'running' AND rev = %(w_rev)s"
    return f"UPDATE {W.name} SET {sets} WHERE {guard}"


def update_running(conn: Connection, columns: tuple[str, ...], params: Mapping[str, Any]) -> int:
    """UPDATE a still-running window at a known revision (``_statements.update``); rows changed."""
    names = (*(f"v_{c}" for c in columns), "w_id", "w_rev")
    result = _prepared(conn, _update_sql(columns), names, params)
    if result is not None:
        return int(result.command_tuples or 0)
    return int(_cursor(conn).execute(_update_sql(columns), params, prepare=True).rowcount)


@functools.lru_cache(maxsize=4)
def _seal_sql(columns: tuple[str, ...]) -> str:
    # set_config(..., true) is SET LOCAL for this statement's own transaction: the seal
    # commits durably on a session whose other statements need not (see Ledger._held).
    return _update_sql(columns) + (
        " RETURNING pg_try_advisory_lock(%(lock_a)s, %(lock_b)s),"
        " set_config('synchronous_commit', 'on', true)"
    )


def seal_running(
    conn: Connection, columns: tuple[str, ...], params: Mapping[str, Any], study: str
) -> tuple[int, bool]:
    """:func:`update_running` for a finalisation that seals its row, trying the study's chain
    lock in the same statement (one round trip, not two). Returns (rows changed, whether the
    lock is now held by this session); no row changed, no lock tried."""
    a, b = _engine.chain_lock_key(study)
    values = {**params, "lock_a": a, "lock_b": b}
    names = (*(f"v_{c}" for c in columns), "w_id", "w_rev", "lock_a", "lock_b")
    result = _prepared(conn, _seal_sql(columns), names, values)
    if result is not None:
        return (0, False) if result.ntuples == 0 else (1, result.get_value(0, 0) == b"t")
    row = _cursor(conn).execute(_seal_sql(columns), values, prepare=True).fetchone()
    return (0, False) if row is None else (1, bool(row[0]))


def try_chain_lock(conn: Connection, study: str) -> bool:
    """Take the study's chain lock (session-level) if it is free; whether it is now ours."""
    a, b = _engine.chain_lock_key(study)
    sql = "SELECT pg_try_advisory_lock(%s, %s)"
    return bool(_cursor(conn).execute(sql, (a, b), prepare=True).fetchone()[0])


def read_chain(conn: Connection, study: str) -> tuple[tuple[int, str] | None, list[dict[str, Any]]]:
    """The study's chain head (None before its first link) and its sealed rows, oldest first."""
    rows = _cursor(conn).execute(_READ_CHAIN, {"s": study}, prepare=True).fetchall()
    first = rows[0]
    head = None if first[0] is None else (int(first[0]), str(first[1]))
    pending = [dict(zip(_COLUMNS, r[2:], strict=True)) for r in rows if r[2] is not None]
    return head, pending


def unlock_any_sealed(conn: Connection, study: str, skip: Sequence[int]) -> bool:
    """Release the study's chain lock; whether the study has sealed rows waiting for their
    link (other than ``skip``), as seen by this statement (its snapshot precedes the release)."""
    a, b = _engine.chain_lock_key(study)
    params = (a, b, study, list(skip))
    row = _cursor(conn).execute(_UNLOCK_ANY_SEALED, params, prepare=True).fetchone()
    return bool(row[1])


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
    return int(_cursor(conn).execute(stmt, params, prepare=True).rowcount) == 1

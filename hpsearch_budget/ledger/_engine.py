"""Database plumbing: URL checks, engines, write locks, and database errors as LedgerError.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout; every write
transaction starts with ``BEGIN IMMEDIATE`` so it takes the database's write lock up front
instead of failing half-way when a read transaction tries to upgrade. PostgreSQL serialises the
few operations that need it with transaction-level advisory locks, released at commit.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from hpsearch_budget.errors import LedgerError

DEFAULT_URL = "sqlite:///hpaudit.db"
ENV_VAR = "HPAUDIT_LEDGER"
TIMEOUT_ENV_VAR = "HPAUDIT_LEDGER_TIMEOUT_S"
#: How long a writer waits for a lock (SQLite's write lock, a PostgreSQL advisory lock) before
#: giving up with a LedgerError; $HPAUDIT_LEDGER_TIMEOUT_S overrides it.
DEFAULT_TIMEOUT_S = 60.0


def lock_timeout_s() -> float:
    return env_seconds(TIMEOUT_ENV_VAR, DEFAULT_TIMEOUT_S, "a positive number of seconds")


def env_seconds(name: str, default: float, what: str, *, zero: bool = False) -> float:
    """Seconds from ``$name`` (``default`` if unset), positive (or 0 if ``zero``), under 1e6;
    else a LedgerError saying it must be ``what``."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not ((value > 0 or (zero and value == 0)) and value < 1e6):
        raise LedgerError(f"${name} must be {what}, got {raw!r}")
    return value


# Advisory-lock namespaces (first key of pg_advisory_xact_lock(int, int)).
_LOCK_CHAIN = 0x68706131  # per study: the chain's sequence numbers
_LOCK_RESERVE = 0x68706132  # global: reservations against shared limits
_LOCK_SCHEMA = 0x68706133  # global: creating the tables


def resolve_url(url: str | None) -> str:
    """The URL to open: the argument, else ``$HPAUDIT_LEDGER``, else ``sqlite:///hpaudit.db``."""
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    if not isinstance(url, str) or not url.strip():
        raise LedgerError(
            f"ledger URL must be a non-empty string like {DEFAULT_URL!r}, got {url!r}"
        )
    return url.strip()


def parse_url(url: str, *, write: bool = True) -> URL:
    """Check the URL names a backend the ledger supports, with a file path that can exist.
    ``write=False`` (a reader): an existing SQLite file need only be readable."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise LedgerError(
            f"not a database URL: {url!r}; use sqlite:///path/to/ledger.db or "
            "postgresql+psycopg://user@host:port/dbname"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"unsupported ledger database {backend!r} in {url!r}; use sqlite:/// or "
            "postgresql+psycopg://"
        )
    if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        # Same server, the driver this package depends on; other drivers are untested.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        _check_sqlite_path(parsed, url, write=write)
    return parsed


def _check_sqlite_path(parsed: URL, url: str, *, write: bool) -> None:
    database = parsed.database
    if not database or database == ":memory:":
        raise LedgerError(
            f"an in-memory SQLite ledger ({url!r}) would vanish with the process and cannot "
            "be shared by workers; give a file: sqlite:///hpaudit.db"
        )
    path = Path(database)
    if path.is_dir():
        raise LedgerError(f"ledger path {database!r} is a directory; name a file inside it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() and not write:  # a reader: nothing is created, so say what is not there
        raise LedgerError(
            f"no ledger at {database!r}: folder {str(parent)!r} does not exist; check the path"
        )
    if not parent.is_dir():
        raise LedgerError(
            f"cannot create ledger {database!r}: folder {str(parent)!r} does not exist; "
            "create it first"
        )
    target = path if path.exists() else parent
    if not write:  # a reader (hpaudit verify, a report): a read-only copy will do
        _check_sqlite_readable(path, parent)
        return
    if not os.access(target, os.W_OK):
        raise LedgerError(
            f"cannot write ledger {database!r}: {str(target)!r} is not writable; "
            "fix its permissions or choose another path"
        )


def _check_sqlite_readable(path: Path, parent: Path) -> None:
    """A reader needs the file readable and, for a ledger (WAL mode), its ``-shm`` file
    beside it, made by SQLite on first read if the folder lets it."""
    if not path.exists():
        return  # the caller says there is no ledger there
    if not os.access(path, os.R_OK):
        raise LedgerError(
            f"cannot read ledger {str(path)!r}: it is not readable; fix its permissions"
        )
    shm = Path(f"{path}-shm")
    if not shm.exists() and not os.access(parent, os.W_OK):
        raise LedgerError(
            f"cannot read ledger {str(path)!r}: SQLite must create {shm.name!r} beside it and "
            f"folder {str(parent)!r} is not writable; copy the ledger to a writable folder"
        )


def create_engine(parsed: URL, *, durable: bool = True) -> Engine:
    """An engine for the ledger. ``durable=False`` (PostgreSQL only) commits without waiting
    for the WAL flush, one statement at a time (autocommit): used for window openings and
    checkpoints, which may lose their last interval anyway and need no multi-statement
    transaction (a checkpoint's UPDATE is guarded by the row's revision)."""
    timeout_s = lock_timeout_s()
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": timeout_s})
        _sqlite_events(engine, timeout_s)
    else:
        options = f"-c lock_timeout={int(timeout_s * 1000)}"
        extra: dict[str, Any] = {}
        if not durable:
            options += " -c synchronous_commit=off"
            # Each fast write is one statement (an INSERT, or an UPDATE guarded by the row's
            # revision), so it needs no BEGIN / COMMIT round trips: 1 round trip instead of 3.
            extra["isolation_level"] = "AUTOCOMMIT"
        try:
            # No pre-ping: it would cost a round trip per transaction; a call whose
            # connection the server dropped reconnects and runs again instead (_retry).
            # No overflow limit: every thread of a worker holds one connection for its
            # per-row writes (_held), so a worker needs threads + a few, past the pool's 15.
            engine = sa.create_engine(
                parsed,
                connect_args={"options": options, "connect_timeout": 10},
                max_overflow=-1,
                **extra,
            )
        except (ImportError, exc.NoSuchModuleError):
            raise LedgerError(
                "a PostgreSQL ledger needs the psycopg driver: "
                "pip install 'hpsearch_budget[postgres]'"
            ) from None
        if durable:
            _durable_commits(engine)
    # A process forked with an open pool must not share its parent's sockets / file handles.
    # (A weak reference: the hook must not keep every engine ever made alive.)
    ref = weakref.ref(engine)

    def _forget_parent_connections() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose(close=False)

    os.register_at_fork(after_in_child=_forget_parent_connections)
    return engine


def _durable_commits(engine: Engine) -> None:
    """PostgreSQL: the durable engine's commits wait for the WAL flush even where the server
    or database is set to ``synchronous_commit = off`` (a reservation lost in a server crash
    frees room other workers may take); a stronger setting (remote_apply, ...) is kept."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(
            "SELECT set_config('synchronous_commit', 'on', false) "
            "WHERE current_setting('synchronous_commit') = 'off'"
        )
        cur.close()
        dbapi_conn.commit()  # a session setting made in a transaction is undone by its rollback


def _sqlite_events(engine: Engine, timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module, so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        # In WAL mode NORMAL still survives a killed process; only a power cut can lose the
        # last commits (never corrupt the file).
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("hpaudit_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def enable_wal(engine: Engine) -> None:
    """Switch a SQLite file to WAL (persistent): readers no longer block the writer."""
    # The switch needs the file to itself, and SQLite answers "database is locked" at once,
    # without its busy handler, while another process opens or switches the same new file:
    # retry briefly (workers racing to create one ledger hit this).
    deadline = time.monotonic() + lock_timeout_s()
    delay = 0.005
    while True:
        try:
            mode = _journal_mode_wal(engine)
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error).lower() or time.monotonic() > deadline:
                raise exc.OperationalError("PRAGMA journal_mode = WAL", None, error) from None
            time.sleep(delay)
            delay = min(0.1, delay * 2)
    if str(mode).lower() != "wal":
        raise LedgerError(
            f"SQLite ledger {engine.url.database!r} cannot use WAL mode (got {mode!r}); "
            "put it on a local disk, not a network file system"
        )


def _journal_mode_wal(engine: Engine) -> Any:
    # Outside any transaction (SQLite refuses the switch inside one): the raw DBAPI connection.
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        mode = cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        cur.close()
    finally:
        raw.close()
    return mode


@contextlib.contextmanager
def write_txn(engine: Engine) -> Iterator[Connection]:
    """A write transaction: SQLite's write lock from its first statement (BEGIN IMMEDIATE)."""
    with engine.connect().execution_options(hpaudit_write=True) as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def single_statement(engine: Engine) -> Iterator[Connection]:
    """A connection in autocommit mode: each statement commits on its own, one round trip
    instead of three (BEGIN, statement, COMMIT), at the engine's durability."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        yield conn


@contextlib.contextmanager
def read_txn(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def _key(text: str) -> int:
    # crc32 is stable across processes (hash() is salted) and fits PostgreSQL's int4.
    value = zlib.crc32(text.encode())
    return value - (1 << 32) if value >= (1 << 31) else value


def chain_lock_key(study: str) -> tuple[int, int]:
    """The advisory-lock key of a study's hash chain (PostgreSQL)."""
    return _LOCK_CHAIN, _key(study)


def lock_chain(conn: Connection, study: str) -> None:
    """Serialise finalisations of one study (SQLite: BEGIN IMMEDIATE already did)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:a, :b)"), {"a": _LOCK_CHAIN, "b": _key(study)}
        )


def lock_reservations(conn: Connection) -> None:
    """Serialise reservations against shared limits, across processes and machines."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, 0)"), {"a": _LOCK_RESERVE})


def lock_schema(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, 0)"), {"a": _LOCK_SCHEMA})


def server_clock_offset_s(engine: Engine, local: Callable[[], float]) -> float:
    """PostgreSQL: how many seconds the server's clock is ahead of ``local`` (Unix seconds),
    read once, against the midpoint of the round trip."""
    with engine.connect() as conn:
        before = local()
        server = conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        after = local()
    return float(server) - (before + after) / 2


def describe(url: URL) -> str:
    """The URL without its password, for messages."""
    return url.render_as_string(hide_password=True)


def _driver_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    try:
        import psycopg
    except ImportError:  # the postgres extra is not installed: only SQLite is usable
        return (), ()
    return (psycopg.Error,), (psycopg.OperationalError,)


#: Errors the PostgreSQL driver raises from statements run on it directly (``_pg``), and
#: those of them that mean the server is unreachable or the connection broke.
DRIVER_ERRORS, DRIVER_OPERATIONAL = _driver_errors()

#: Every error a database call may raise: the drivers' own (``_pg``, hot SQLite writes
#: through sqlite3) and SQLAlchemy's.
DATABASE_ERRORS: tuple[type[Exception], ...] = (*DRIVER_ERRORS, sqlite3.Error, exc.SQLAlchemyError)


def first_line(error: Exception) -> str:
    """The first line of a database error's message (the driver's, not SQLAlchemy's wrapper)."""
    orig = getattr(error, "orig", None)
    raw = str(orig if orig is not None else error).strip()
    return raw.splitlines()[0] if raw else type(error).__name__


def translate(error: Exception, url: URL) -> LedgerError:
    """A database error (SQLAlchemy's, or the driver's own) as a one-line LedgerError."""
    where = describe(url)
    text = first_line(error)
    low = text.lower()
    if "file is not a database" in low or "malformed" in low or "not a database" in low:
        return LedgerError(
            f"ledger {where} is not a SQLite database or is corrupted ({text}); "
            "restore it from a backup or point to another file"
        )
    if "database is locked" in low or "database is busy" in low or "lock timeout" in low:
        return LedgerError(
            f"ledger {where} stayed locked by another process for over {lock_timeout_s():g} s; "
            f"stop the process holding it, or raise ${TIMEOUT_ENV_VAR}"
        )
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return LedgerError(
            f"cannot write ledger {where} ({text}); check the path and its permissions"
        )
    if url.get_backend_name() == "postgresql" and (
        "closed the connection" in low or "terminating connection" in low
    ):  # a server restart, an idle-session timeout: a held or pooled connection is gone
        return LedgerError(
            f"lost the connection to PostgreSQL ledger {where} ({text}); the next call "
            "reconnects: retry it, and check the server if this keeps happening"
        )
    operational = isinstance(error, (exc.OperationalError, *DRIVER_OPERATIONAL))
    if operational and url.get_backend_name() == "postgresql":
        return LedgerError(
            f"cannot reach PostgreSQL ledger {where} ({text}); check the host, port, "
            "database name and that the server is running"
        )
    return LedgerError(f"ledger {where}: database error: {text}")

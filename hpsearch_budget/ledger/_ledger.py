"""The energy ledger: one row per trial window, checkpointed, finalised, hash-chained."""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import socket
import sqlite3
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection, RowMapping

from hpsearch_budget.budget import Cost
from hpsearch_budget.carbon import CarbonModel, default_carbon_model
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.ledger import _chain, _engine, _held, _pg, _schema
from hpsearch_budget.ledger._chain import VerifyReport
from hpsearch_budget.ledger._checks import check_cost as _check_cost
from hpsearch_budget.ledger._checks import check_limits as _check_limits
from hpsearch_budget.ledger._checks import check_measurement as _check_measurement
from hpsearch_budget.ledger._checks import check_name as _check_name
from hpsearch_budget.ledger._checks import check_window as _check_window
from hpsearch_budget.ledger._checks import within as _within
from hpsearch_budget.ledger._scope import Scope, to_unix_s
from hpsearch_budget.ledger._sqlite import SQLITE_HEAD as _SQLITE_HEAD
from hpsearch_budget.ledger._sqlite import SQLITE_HEAD_INSERT as _SQLITE_HEAD_INSERT
from hpsearch_budget.ledger._sqlite import SQLITE_HEAD_UPDATE as _SQLITE_HEAD_UPDATE
from hpsearch_budget.ledger._sqlite import SqliteSums as _SqliteSums
from hpsearch_budget.ledger._sqlite import sqlite_fits as _sqlite_fits
from hpsearch_budget.ledger._sqlite import sqlite_insert as _sqlite_insert
from hpsearch_budget.ledger._sqlite import sqlite_sql as _sqlite_sql
from hpsearch_budget.ledger._sqlite import sqlite_write as _sqlite_write
from hpsearch_budget.ledger._statements import FINAL_COLUMNS as _FINAL_COLUMNS
from hpsearch_budget.ledger._statements import HEAD_FOR_UPDATE as _HEAD_FOR_UPDATE
from hpsearch_budget.ledger._statements import HEAD_UPDATE as _HEAD_UPDATE
from hpsearch_budget.ledger._statements import MISSED_INTERVALS as MISSED_INTERVALS
from hpsearch_budget.ledger._statements import MUTABLE_COLUMNS as _MUTABLE_COLUMNS
from hpsearch_budget.ledger._statements import RESERVE as _RESERVE
from hpsearch_budget.ledger._statements import ROW as _ROW
from hpsearch_budget.ledger._statements import ROW_FOR_UPDATE as _ROW_FOR_UPDATE
from hpsearch_budget.ledger._statements import params as _params
from hpsearch_budget.ledger._statements import sums_statement as _sums_statement
from hpsearch_budget.ledger._statements import update as _update
from hpsearch_budget.ledger._statements import where as _where
from hpsearch_budget.meters import Measurement
from hpsearch_budget.units import j_to_kwh

W = _schema.windows
T = TypeVar("T")

#: What psycopg (``_pg``) and sqlite3 (hot SQLite writes) raise when used directly.
_FAST_PATH_ERRORS: tuple[type[Exception], ...] = (*_engine.DRIVER_ERRORS, sqlite3.Error)

#: What a failed link may raise (the row stays sealed; see Ledger.finalize).
_LINK_ERRORS: tuple[type[Exception], ...] = (
    exc.SQLAlchemyError,
    LedgerError,
    *_engine.DRIVER_ERRORS,
)

#: True of every running row (``seq`` is set when a finished row is linked): said alongside
#: ``status = 'running'`` so that the partial index of unlinked rows can serve the query.
_UNLINKED = W.c.seq.is_(None)

#: Link passes one finalisation makes at most while other writers keep sealing rows.
_LINK_PASSES = 16

#: At most one opportunistic reap per this many seconds per Ledger object.
_REAP_EVERY_S = 10.0

#: The columns of :meth:`Ledger.entries`, in order (docs/contracts.md).
ENTRY_COLUMNS = (
    "id", "study", "trial_key", "trial_number", "phase", "status", "project", "user", "host",
    "pid", "started_at", "updated_at", "ended_at", "wall_s", "step", "energy_j",
    "energy_by_domain", "sources", "source", "gpu_s", "devices", "gpu_share", "pue",
    "g_per_kwh", "intensity_source", "co2e_g", "usd", "params", "value", "values",
    "reserved_energy_j", "reserved_co2e_g", "reserved_usd", "reserved_gpu_s", "row_hash",
    "seq", "checkpoint_interval_s",
)  # fmt: skip


def default_carbon() -> CarbonModel:
    """The model used when nothing is said: world-average grid intensity, PUE 1.58 and the
    default electricity price (see :func:`hpsearch_budget.carbon.default_carbon_model`).
    Pass ``carbon=`` (or a lab policy's defaults) for your own grid."""
    return default_carbon_model()


def _now() -> float:
    return time.time()


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


_COST_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")


def _reserved(row: Mapping[str, Any], amount: Cost) -> dict[str, Any]:
    """A new window's row holding ``amount`` as its first reservation."""
    return {**row, **{f"reserved_{f}": float(getattr(amount, f)) for f in _COST_FIELDS}}


class Ledger:
    """The energy ledger, in SQLite (default) or PostgreSQL, through SQLAlchemy Core.

    Each trial (or final-training, seed-rerun, idle) window is a row: opened when it starts,
    checkpointed while it runs (a crash loses at most one interval), finalised with its status.
    Carbon and money are charged per checkpoint with the intensity in force at that moment.
    Finished rows are append-only and hash-chained per study (:meth:`verify`).

    >>> import tempfile, os
    >>> from hpsearch_budget.meters import Measurement
    >>> path = os.path.join(tempfile.mkdtemp(), "ledger.db")
    >>> ledger = Ledger(f"sqlite:///{path}")
    >>> w = ledger.open_window("demo", "demo:0", trial_number=0, params={"lr": 0.1})
    >>> cost = ledger.finalize(w, Measurement(10.0, {"cpu": 3.6e6}), status="complete", value=0.9)
    >>> round(cost.energy_kwh, 3), ledger.studies(), ledger.verify().ok
    (1.0, ['demo'], True)
    >>> ledger.close()

    Args:
        url: ``sqlite:///path.db`` or ``postgresql+psycopg://user@host:port/db``; ``None`` reads
            ``$HPAUDIT_LEDGER``, else ``sqlite:///hpaudit.db``.
        carbon: intensity, PUE and price used to charge this process's windows.
        allow_other_tables: open a database that also holds other tables (e.g. an Optuna
            storage). By default such a database is refused as "not a ledger".
        create: make the ledger if there is none (default). Readers (``hpaudit verify``,
            reports) pass ``False`` so a mistyped path is an error, not a new empty ledger.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        carbon: CarbonModel | None = None,
        allow_other_tables: bool = False,
        create: bool = True,
    ) -> None:
        self.url = _engine.resolve_url(url)
        self.carbon = carbon if carbon is not None else default_carbon()
        self._allow_other_tables = allow_other_tables
        self._create = create
        self._parsed = _engine.parse_url(self.url)
        sqlite_path = str(self._parsed.database)
        if (
            not create
            and self._parsed.get_backend_name() == "sqlite"
            and not os.path.exists(sqlite_path)
        ):
            raise LedgerError(
                f"no ledger at {sqlite_path!r}; check the path (or ${_engine.ENV_VAR}), "
                "or run a sweep first to create it"
            )
        self._engine = self._guard(lambda: _engine.create_engine(self._parsed))
        # Checkpoints and window openings need not wait for PostgreSQL's WAL flush: a server
        # crash then loses at most the last checkpoint, the loss a checkpoint interval allows.
        # Finalisations and reservations stay fully durable. (SQLite: one engine.)
        self._fast = (
            self._engine
            if self._engine.dialect.name == "sqlite"
            else self._guard(lambda: _engine.create_engine(self._parsed, durable=False))
        )
        self._pg = self._engine.dialect.name == "postgresql"  # per-row SQL through psycopg
        # PostgreSQL's per-row statements run on one connection each thread keeps (_held), of
        # the fast engine; the statements that must be durable (a seal) say so themselves.
        self._held = _held.HeldConnections(self._fast)
        self._sqlite = self._engine.dialect.name == "sqlite"  # hot writes through sqlite3
        self._last_reap = -math.inf
        self._cache: dict[int, dict[str, Any]] = {}  # window id -> the row as this process wrote it
        self._host = socket.gethostname()
        self._unlinked: set[str] = set()  # studies whose sealed rows a link failed to chain
        _OPEN.add(self)  # linked at exit if never closed (_link_at_exit)
        self._sqlite_sums = _SqliteSums()  # spent / committed read incrementally (SQLite)
        try:
            self._guard(self._open_schema)
        except BaseException:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, turning database errors into one-line LedgerErrors."""
        try:
            return fn()
        except _FAST_PATH_ERRORS as error:  # from the drivers' fast paths (_pg, sqlite3)
            raise _engine.translate(error, self._parsed) from None
        except (exc.DBAPIError, exc.NoSuchModuleError, exc.OperationalError) as error:
            raise _engine.translate(error, self._parsed) from None
        except exc.SQLAlchemyError as error:
            raise _engine.translate(error, self._parsed) from None

    def _open_schema(self) -> None:
        names = set(sa.inspect(self._engine).get_table_names())
        if _schema.meta.name not in names:
            if not self._create:
                raise LedgerError(
                    f"{_engine.describe(self._parsed)} holds no hpaudit ledger; check the URL"
                )
            others = sorted(names - _schema.TABLE_NAMES)
            if others and not self._allow_other_tables:
                shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
                raise LedgerError(
                    f"{_engine.describe(self._parsed)} is not an hpaudit ledger (it holds tables "
                    f"{shown}); point to a new file or database, or pass "
                    "Ledger(..., allow_other_tables=True) to share it"
                )
            if self._engine.dialect.name == "sqlite":
                _engine.enable_wal(self._engine)
            with _engine.write_txn(self._engine) as conn:
                _engine.lock_schema(conn)
                _schema.metadata.create_all(conn, checkfirst=True)
                have = conn.execute(sa.select(_schema.meta.c.key)).scalars().all()
                if "schema_version" not in have:
                    conn.execute(
                        _schema.meta.insert(),
                        [
                            {"key": "schema_version", "value": str(_schema.SCHEMA_VERSION)},
                            {"key": "application", "value": _schema.APPLICATION},
                        ],
                    )
        with _engine.read_txn(self._engine) as conn:
            meta = dict(conn.execute(sa.select(_schema.meta.c.key, _schema.meta.c.value)).all())
        where = _engine.describe(self._parsed)
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise LedgerError(
                f"{where} has an hpaudit_meta table without a valid schema_version; "
                "it is not a ledger this version can read"
            ) from None
        if version > _schema.SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {where} has schema v{version}, written by a newer hpsearch_budget "
                f"(this one reads v{_schema.SCHEMA_VERSION}); "
                "upgrade: pip install -U hpsearch_budget"
            )
        missing = _schema.TABLE_NAMES - set(sa.inspect(self._engine).get_table_names())
        if missing:
            raise LedgerError(
                f"ledger {where} is damaged: table(s) {', '.join(sorted(missing))} missing; "
                "restore it from a backup"
            )

    def close(self) -> None:
        """Link any sealed rows a failed link left behind, then release the connections."""
        self._link_left()
        self._held.close()
        self._engine.dispose()
        self._fast.dispose()

    def _link_left(self) -> None:
        """Link the sealed rows this object's finalisations left unlinked (PostgreSQL); also
        run at interpreter exit for a ledger never closed (an Optuna or Ray worker that just
        ends), so that a sweep's last rows do not stay sealed until the study's next run."""
        for study in sorted(self._unlinked):
            with contextlib.suppress(LedgerError):  # the next finalisation links them anyway
                self._guard(lambda study=study: self._link_now(study))  # type: ignore[misc]
        self._unlinked.clear()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({_engine.describe(self._parsed)!r})"

    # A Ledger travels to worker processes (Ray, multiprocessing) as its URL and carbon model.
    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "carbon": self.carbon,
            "allow": self._allow_other_tables,
            "create": self._create,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["url"],
            carbon=state["carbon"],
            allow_other_tables=state["allow"],
            create=state["create"],
        )

    # -- writing ----------------------------------------------------------------------------

    @overload
    def open_window(
        self,
        study: str,
        trial_key: str,
        *,
        phase: str = "tuning",
        trial_number: int | None = None,
        params: Mapping[str, Any] | None = None,
        devices: Sequence[str] = (),
        gpu_share: float = 1.0,
        project: str | None = None,
        user: str | None = None,
        checkpoint_interval_s: float = 30.0,
        reserve: None = None,
    ) -> int: ...

    @overload
    def open_window(
        self,
        study: str,
        trial_key: str,
        *,
        phase: str = "tuning",
        trial_number: int | None = None,
        params: Mapping[str, Any] | None = None,
        devices: Sequence[str] = (),
        gpu_share: float = 1.0,
        project: str | None = None,
        user: str | None = None,
        checkpoint_interval_s: float = 30.0,
        reserve: tuple[Cost, Sequence[tuple[Scope, Cost]]],
    ) -> tuple[int, bool]: ...

    def open_window(
        self,
        study: str,
        trial_key: str,
        *,
        phase: str = "tuning",
        trial_number: int | None = None,
        params: Mapping[str, Any] | None = None,
        devices: Sequence[str] = (),
        gpu_share: float = 1.0,
        project: str | None = None,
        user: str | None = None,
        checkpoint_interval_s: float = 30.0,
        reserve: tuple[Cost, Sequence[tuple[Scope, Cost]]] | None = None,
    ) -> int | tuple[int, bool]:
        """Open a running window and return its id (checkpoint it, then finalise it).

        ``reserve=(amount, limits)`` also takes the window's first reservation, exactly as
        :meth:`try_reserve` would right after, but in the same transaction as the INSERT: one
        write transaction per new trial instead of two (its check and its write under the
        same lock as ``try_reserve``'s). The window is opened either way -- the caller can
        charge and finalise it, or wait and :meth:`try_reserve` again -- and the result is
        ``(window_id, reserved)``: ``reserved`` False means nothing was reserved because
        ``amount`` did not fit a limit.
        """
        _check_name(study, "study")
        _check_name(trial_key, "trial_key")
        _check_window(phase, gpu_share, checkpoint_interval_s, devices)
        now = _now()
        intensity = self.carbon.footprint(0.0, datetime.fromtimestamp(now, UTC))
        row = {
            "study": study,
            "trial_key": trial_key,
            "trial_number": None if trial_number is None else int(trial_number),
            "phase": phase,
            "status": "running",
            "project": project,
            "user_name": user,
            "host": self._host,
            "pid": os.getpid(),
            "started_unix_s": now,
            "updated_unix_s": now,
            "ended_unix_s": None,
            "checkpoint_interval_s": float(checkpoint_interval_s),
            "wall_s": 0.0,
            "step": None,
            "energy_j": 0.0,
            "energy_by_domain": "{}",
            "sources": "{}",
            "source": None,
            "gpu_s": 0.0,
            "devices": _chain.canonical_json([str(d) for d in devices]),
            "gpu_share": float(gpu_share),
            "pue": float(self.carbon.pue),
            "g_per_kwh": float(intensity.g_per_kwh),
            "intensity_source": intensity.intensity_source,
            "co2e_g": 0.0,
            "usd": 0.0,
            "params": _chain.canonical_json(dict(params or {})),
            "value": None,
            "values_json": None,
            "reserved_energy_j": 0.0,
            "reserved_co2e_g": 0.0,
            "reserved_usd": 0.0,
            "reserved_gpu_s": 0.0,
            "rev": 0,
        }

        if reserve is None:

            def insert() -> int:
                if self._sqlite:
                    with _sqlite_write(self._engine) as db:
                        return _sqlite_insert(db, row)
                with self._held.session() as conn:
                    return self._insert(conn, row)

            window_id = self._guard(insert)
            self._cache[window_id] = {**row, "id": window_id}
            self._maybe_reap()
            return window_id

        if not (isinstance(reserve, tuple | list) and len(reserve) == 2):
            raise HpauditInputError(
                "reserve must be an (amount, limits) pair, as try_reserve takes"
            )
        amount, checked = reserve[0], _check_limits(reserve[1])
        _check_cost(amount, "amount", allow_inf=False)
        self._maybe_reap()

        def insert_reserved() -> tuple[int, bool]:
            if self._sqlite:  # BEGIN IMMEDIATE: SQLite's write lock is the reservations lock
                with _sqlite_write(self._engine) as db:
                    fits = _sqlite_fits(db, amount, checked, _now(), self._sqlite_sums)
                    return _sqlite_insert(db, _reserved(row, amount) if fits else row), fits
            # Durable, like try_reserve: on PostgreSQL the reservation lock and the INSERT
            # share one transaction (the fast engine commits statement by statement).
            with _engine.write_txn(self._engine) as conn:
                _engine.lock_reservations(conn)
                # The new row adds nothing to spent or committed until it is reserved, so
                # checking before the INSERT is checking after it.
                fits = self._fits(conn, amount, checked)
                return self._insert(conn, _reserved(row, amount) if fits else row), fits

        window_id, reserved = self._guard(insert_reserved)
        self._cache[window_id] = {**(_reserved(row, amount) if reserved else row), "id": window_id}
        return window_id, reserved

    def _insert(self, conn: Connection, row: Mapping[str, Any]) -> int:
        if self._pg:
            return _pg.insert_window(conn, row)
        key = conn.execute(W.insert(), row).inserted_primary_key
        assert key is not None  # a single-row insert always has one
        return int(key[0])

    def checkpoint(
        self,
        window_id: int,
        measurement: Measurement,
        *,
        step: int | None = None,
        value: float | None = None,
    ) -> Cost:
        """Record the window's energy so far (cumulative since it opened); its cost so far.

        The energy added since the last checkpoint is charged at the intensity in force now.
        """
        _check_measurement(measurement)

        def change(row: Mapping[str, Any]) -> dict[str, Any]:
            update = self._charge(row, measurement)
            update["step"] = row["step"] if step is None else int(step)
            if value is not None:
                update["value"] = _finite(value)
            return update

        def run() -> Cost:
            fast = self._sqlite_write_cached(window_id, change, final=False)
            if fast is not None:
                return _cost(fast)
            session = self._held.session() if self._pg else _engine.write_txn(self._fast)
            with session as conn:
                return _cost(self._write(conn, window_id, change, final=False)[0])

        return self._guard(run)

    def finalize(
        self,
        window_id: int,
        measurement: Measurement,
        *,
        status: str,
        value: float | None = None,
        values: Sequence[float] | None = None,
        params: Mapping[str, Any] | None = None,
        step: int | None = None,
    ) -> Cost:
        """Close the window with its final energy and ``status`` (complete | pruned | failed |
        killed), append it to its study's hash chain, release its reservation; its cost.

        ``params`` replaces the row's parameters (define-by-run searches such as Optuna know
        them only after the window opened); ``None`` keeps those given to :meth:`open_window`.
        ``step`` (and ``value``) set the last reported step (and value) as :meth:`checkpoint`
        would, so a caller holding a report not yet written needs no checkpoint just before
        finalising; ``None`` keeps the row's.

        On PostgreSQL the finished row is committed durably *sealed* first and linked into the
        chain right after, by this writer or by the one holding the study's chain lock at that
        moment (:meth:`_link_sealed`): finalisations of one study no longer queue behind each
        other's WAL flush. If linking fails the window stays finalised and sealed (a
        LedgerError says so) and is linked by the study's next finalisation or :meth:`close`.
        """
        if status not in _schema.FINISHED:
            raise HpauditInputError(
                f"cannot finalise with status {status!r}; use one of {', '.join(_schema.FINISHED)}"
            )
        _check_measurement(measurement)

        def change(row: Mapping[str, Any]) -> dict[str, Any]:
            update = self._charge(row, measurement)
            update.update(status=status, ended_unix_s=update["updated_unix_s"])
            if step is not None:
                update["step"] = int(step)
            if value is not None:
                update["value"] = _finite(value)
            if values is not None:
                update["values_json"] = _chain.canonical_json([float(v) for v in values])
            if params is not None:
                update["params"] = _chain.canonical_json(dict(params))
            return update

        if not self._pg:
            # One write transaction: row and chain link together (SQLite's lock is global).
            def run() -> dict[str, Any]:
                fast = self._sqlite_write_cached(window_id, change, final=True)
                if fast is not None:
                    return fast
                with _engine.write_txn(self._engine) as conn:
                    return self._write(conn, window_id, change, final=True)[0]

        else:
            # PostgreSQL: the sealed row commits durably on its own (writers that find the
            # chain lock taken do not wait for it, so the WAL flushes of concurrent
            # finalisations share one fsync); the sealing statement tries the lock, and its
            # holder links on the same connection.
            def run() -> dict[str, Any]:
                # The seal commits durably (it says so itself: _pg.seal_running). A failing
                # block drops its held connection, which may hold the chain lock.
                with self._held.session() as conn:
                    row, locked = self._write(conn, window_id, change, final=True, seal=True)
                    what = f"window {window_id}"
                    self._link_sealed(conn, row["study"], mine=row, locked=locked, what=what)
                    return row

        try:
            return _cost(self._guard(run))
        finally:
            self._cache.pop(int(window_id), None)

    def _link_sealed(
        self,
        conn: Connection,
        study: str,
        *,
        mine: Mapping[str, Any] | None = None,
        locked: bool | None = None,
        what: str = "a sealed row",
    ) -> int:
        """Link the study's sealed rows, or leave them to the writer linking it now (PostgreSQL).

        The chain lock is a session-level advisory lock taken with ``pg_try_advisory_lock``:
        a writer that finds it taken returns at once, and the holder links what it can see.
        The holder links every sealed row in passes; one statement releases the lock and looks
        for sealed rows left, and if there are any it tries again. So a row committed before a
        writer's failed try is linked: the holder's last look comes after that try.

        ``locked``: the finalisation tried the lock in its sealing statement (one round trip
        fewer). True: this connection holds it. False: another writer held it while this seal
        was not yet committed, so that writer's last look may miss the row; the study's next
        finalisation links it, and this object's :meth:`close` makes sure (a sealed row is
        sound meanwhile: :meth:`verify` counts it as ``pending``). A link that fails leaves
        the rows sealed, for the next finalisation or :meth:`close`. Returns the rows linked.
        """
        if locked is False:
            self._unlinked.add(study)
            return 0
        linked = 0
        skipped: set[int] = set()  # sealed rows whose seal no longer matches: never linked
        try:
            for attempt in range(_LINK_PASSES):
                if not (attempt == 0 and locked) and not _pg.try_chain_lock(conn, study):
                    return linked  # the holder links every row it can see (see above)
                n, bad = self._link_pass(conn, study, mine)
                linked += n
                skipped |= bad
                if not _pg.unlock_any_sealed(conn, study, sorted(skipped)):
                    return linked
            self._unlinked.add(study)  # still busy after every pass: close() links the rest
            return linked
        except BaseException as error:
            # The connection may still hold the session lock: drop it (the server then
            # releases the lock), so that a pooled connection never carries it to another call.
            conn.invalidate()
            self._unlinked.add(study)
            if not isinstance(error, _LINK_ERRORS):
                raise
            text = error if isinstance(error, LedgerError) else self._translate(error)
            raise LedgerError(
                f"{text} ({what} is finalised and sealed; the study's next finalisation or "
                "Ledger.close() links it into the hash chain)"
            ) from None

    def _link_pass(
        self, conn: Connection, study: str, mine: Mapping[str, Any] | None
    ) -> tuple[int, set[int]]:
        """Under the chain lock: link every sealed row of ``study``, in one statement that does
        not wait for the WAL flush (a link lost in a server crash is redone from the durable
        seals). ``mine``: the row as this process just sealed it (if the database holds it
        unchanged, its seal needs no recomputing). Returns (rows linked, ids left unlinked
        because their seal no longer matches: edited or inserted by hand, for verify())."""
        head, pending = _pg.read_chain(conn, study)
        last_seq, prev = head if head is not None else (0, _chain.GENESIS)
        links: list[tuple[int, int, str, str]] = []
        bad: set[int] = set()
        for row in pending:
            seq = last_seq + len(links) + 1
            # The row exactly as this process sealed it (one dict comparison, in C) needs no
            # checking; any other is checked against its seal (in the same JSON encoding).
            digest = (
                _chain.row_hash({**row, "seq": seq, "prev_hash": prev}, prev)
                if row == mine
                else _chain.link_sealed(row, seq, prev)
            )
            if digest is None:
                bad.add(int(row["id"]))
                continue
            links.append((int(row["id"]), seq, prev, digest))
            prev = digest
        if links and not _pg.link(conn, study, links, head_exists=head is not None):
            # Under the chain lock only someone editing the table by hand can cause this; the
            # statement changed nothing and the rows stay sealed.
            raise LedgerError(f"study {study!r}: a sealed row changed while being linked")
        return len(links), bad

    def _link_now(self, study: str) -> int:
        """Link the study's sealed rows (:meth:`close`), unless another writer holds the chain
        lock: every row this process sealed was committed before this try, so the holder's
        last look, which follows the try, sees them (see :meth:`_link_sealed`)."""
        self._unlinked.discard(study)
        with _engine.single_statement(self._engine) as conn:
            return self._link_sealed(conn, study)

    def _translate(self, error: Exception) -> LedgerError:
        return _engine.translate(error, self._parsed)

    def _write(
        self,
        conn: Connection,
        window_id: int,
        change: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        final: bool,
        seal: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Apply ``change`` to a running window; the row as written, and whether this
        connection now holds the study's chain lock (only a seal tries it, see below).

        The row this process last wrote is cached: if the database still holds that revision
        the UPDATE goes through without a SELECT first. If anyone else wrote it meanwhile
        (another process, a reservation, :meth:`reap`), the UPDATE matches nothing and the row
        is read afresh, locked, and the change recomputed from it. ``seal`` (a finalisation on
        PostgreSQL): the row is sealed instead of linked (:meth:`_link_sealed` links it), and
        the sealing statement tries the study's chain lock too.
        """
        window_id = int(window_id)
        # Lock order, everywhere: chain head, then row. So a finalisation reads its row
        # unlocked, locks the head, and only then (if the row moved) re-reads it locked.
        row = self._cache.get(window_id) or self._running_row(conn, window_id, lock=not final)
        link = self._next_link(conn, row["study"]) if final and not seal else None
        # A linking finalisation holds the row's lock after one re-read, so two attempts
        # suffice. A checkpoint or a sealing finalisation on PostgreSQL runs in autocommit (no
        # lock kept between statements): it re-reads and retries while a concurrent writer (a
        # reservation, a reap) moves the row.
        for attempt in range(2 if link is not None else 4):
            if attempt:  # stale cache: read (and lock) the row as it is now
                row = self._running_row(conn, window_id, lock=True)
            new = {**row, **change(row), "rev": int(row["rev"]) + 1}
            columns = _FINAL_COLUMNS if final else _MUTABLE_COLUMNS
            if link is not None:
                new = _linked(new, link)
            elif seal:
                new.update(seq=None, prev_hash=None)
                new["row_hash"] = _chain.seal(new)
            params = {**_params(window_id, {c: new[c] for c in columns}), "w_rev": row["rev"]}
            locked = False
            if self._pg and seal:
                written, locked = _pg.seal_running(conn, columns, params, row["study"])
            elif self._pg:
                written = _pg.update_running(conn, columns, params)
            else:
                written = conn.execute(_update(columns), params).rowcount
            if written == 1:
                if link is not None:
                    self._store_head(conn, link, new["row_hash"])
                self._cache[window_id] = new
                return new, locked
            self._cache.pop(window_id, None)
        raise LedgerError(f"window {window_id} changed while being written; retry")

    def _sqlite_write_cached(
        self,
        window_id: int,
        change: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        final: bool,
    ) -> dict[str, Any] | None:
        """SQLite: :meth:`_write` for a window whose row this process wrote last, as the same
        statements through the sqlite3 driver (SQLAlchemy's per-statement Python cost was
        most of a trial's ledger time). None: not SQLite, or the row is not cached, or it
        moved since (nothing written): the caller takes the general path, which re-reads it.
        """
        if not self._sqlite:
            return None
        window_id = int(window_id)
        row = self._cache.get(window_id)
        if row is None:
            return None
        with _sqlite_write(self._engine) as db:
            link: _Link | None = None
            if final:  # BEGIN IMMEDIATE already holds the chain (SQLite's one write lock)
                head = db.execute(_SQLITE_HEAD, {"s": row["study"]}).fetchone()
                link = (
                    _Link(row["study"], 1, _chain.GENESIS, exists=False)
                    if head is None
                    else _Link(row["study"], int(head[0]) + 1, str(head[1]), exists=True)
                )
            new = {**row, **change(row), "rev": int(row["rev"]) + 1}
            columns = _FINAL_COLUMNS if final else _MUTABLE_COLUMNS
            if link is not None:
                new = _linked(new, link)
            params = {**_params(window_id, {c: new[c] for c in columns}), "w_rev": row["rev"]}
            sql, defaults = _sqlite_sql(_update(columns))
            if db.execute(sql, {**defaults, **params}).rowcount != 1:
                self._cache.pop(window_id, None)
                return None  # nothing written: the transaction commits no change
            if link is not None:
                head_params = {"s": link.study, "v_seq": link.seq, "v_head_hash": new["row_hash"]}
                db.execute(_SQLITE_HEAD_UPDATE if link.exists else _SQLITE_HEAD_INSERT, head_params)
        self._cache[window_id] = new
        return new

    def _running_row(
        self, conn: Connection, window_id: int, *, lock: bool = False
    ) -> dict[str, Any]:
        # SQLite's write lock is already held: no FOR UPDATE there.
        stmt = _ROW_FOR_UPDATE if lock and conn.dialect.name != "sqlite" else _ROW
        row = conn.execute(stmt, {"w_id": int(window_id)}).mappings().first()
        if row is None:
            raise LedgerError(
                f"no window {window_id} in ledger {_engine.describe(self._parsed)}; "
                "open it with Ledger.open_window() against the same ledger URL"
            )
        if row["status"] != "running":
            hint = (
                f" (it was silent for over {MISSED_INTERVALS} checkpoint intervals of "
                f"{row['checkpoint_interval_s']:g} s; checkpoint more often or raise "
                "checkpoint_interval_s)"
                if row["status"] == "killed"
                else ""
            )
            raise LedgerError(f"window {window_id} is already finalised as {row['status']!r}{hint}")
        return dict(row)

    def _charge(self, row: Mapping[str, Any], m: Measurement) -> dict[str, Any]:
        """The row's new figures after ``m`` (cumulative): charge only the energy added."""
        now = _now()
        update: dict[str, Any] = {
            "updated_unix_s": now,
            "wall_s": max(float(row["wall_s"]), float(m.wall_s)),
        }
        devices = json.loads(row["devices"])
        update["gpu_s"] = update["wall_s"] * len(devices) * float(row["gpu_share"])
        delta_j = m.energy_j - float(row["energy_j"])
        if delta_j <= 0.0:  # nothing new (or a meter that restarted): keep what was charged
            return update
        fp = self.carbon.footprint(delta_j, datetime.fromtimestamp(now, UTC))
        energy_j = float(row["energy_j"]) + delta_j
        co2e_g = float(row["co2e_g"]) + fp.co2e_g
        kwh = j_to_kwh(energy_j) * fp.pue
        labels = row["intensity_source"].split("; ") if float(row["energy_j"]) > 0 else []
        if fp.intensity_source not in labels:
            labels.append(fp.intensity_source)
        update.update(
            energy_j=energy_j,
            energy_by_domain=_chain.canonical_json({k: float(v) for k, v in m.by_domain.items()}),
            sources=_chain.canonical_json({k: str(v) for k, v in m.sources.items()}),
            source=None if m.source is None else str(m.source),
            co2e_g=co2e_g,
            usd=float(row["usd"]) + fp.usd,
            pue=float(fp.pue),
            g_per_kwh=co2e_g / kwh if kwh > 0 else float(fp.g_per_kwh),
            intensity_source="; ".join(labels),
        )
        return update

    def _next_link(self, conn: Connection, study: str) -> _Link:
        """Lock the study's chain and return where its next row goes (until commit).

        SQLite's finalisations and reaps; PostgreSQL seals and links instead (_link_sealed).
        """
        # PostgreSQL: locking the head row (FOR UPDATE re-reads it once the lock is ours) is the
        # chain lock in one round trip; a study's first link takes the advisory lock instead,
        # as there is no row to lock yet. SQLite: BEGIN IMMEDIATE already serialises writers.
        head = conn.execute(_HEAD_FOR_UPDATE, {"s": study}).mappings().first()
        if head is None and conn.dialect.name != "sqlite":
            _engine.lock_chain(conn, study)
            head = conn.execute(_HEAD_FOR_UPDATE, {"s": study}).mappings().first()
        if head is None:
            return _Link(study, 1, _chain.GENESIS, exists=False)
        return _Link(study, int(head["seq"]) + 1, str(head["head_hash"]), exists=True)

    @staticmethod
    def _store_head(conn: Connection, link: _Link, row_hash: str) -> None:
        params = {"study": link.study, "seq": link.seq, "head_hash": row_hash}
        if link.exists:
            conn.execute(
                _HEAD_UPDATE, {"s": link.study, "v_seq": link.seq, "v_head_hash": row_hash}
            )
        else:
            conn.execute(_schema.chain_heads.insert(), params)

    # -- budget -----------------------------------------------------------------------------

    def spent(self, scope: Scope = Scope()) -> Cost:
        """What the rows in ``scope`` cost: finished rows plus running rows' last checkpoint."""

        def run() -> Cost:
            with _engine.read_txn(self._engine) as conn:
                return self._sums(conn, scope, _now())[0]

        return self._guard(run)

    def committed(self, scope: Scope = Scope()) -> Cost:
        """Reserved but not yet spent by running windows in ``scope`` (dead ones excluded)."""

        def run() -> Cost:
            with _engine.read_txn(self._engine) as conn:
                return self._sums(conn, scope, _now())[1]

        return self._guard(run)

    def _sums(self, conn: Connection, scope: Scope, now: float) -> tuple[Cost, Cost]:
        if self._sqlite:  # in the caller's transaction; only rows that can change are read
            db: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
            return self._sqlite_sums.read(db, scope, now)
        # One statement, so spent and committed come from one snapshot even under PostgreSQL's
        # READ COMMITTED: a window finishing concurrently is counted once, never twice or never.
        stmt, params = _sums_statement(scope)
        values = conn.execute(stmt, {**params, "now": now}).one()
        v = [float(x) for x in values]
        return Cost(*v[:4]), Cost(*v[4:])

    def _fits(self, conn: Connection, amount: Cost, limits: Sequence[tuple[Scope, Cost]]) -> bool:
        """Whether ``amount`` fits every limit (the caller holds the reservations lock)."""
        now = _now()
        for scope, limit in limits:
            spent, committed = self._sums(conn, scope, now)
            if not _within(spent + committed + amount, limit):
                return False
        return True

    def try_reserve(
        self, window_id: int, amount: Cost, limits: Sequence[tuple[Scope, Cost]]
    ) -> bool:
        """Reserve ``amount`` more for a running window if, for every ``(scope, limit)``,
        spent(scope) + committed(scope) + amount <= limit (componentwise; inf = no limit).

        Atomic across processes and machines: the check and the write happen under one database
        lock, so racing workers can never jointly exceed a limit. The reservation is added to
        the window's and released when the window is finalised.
        """
        _check_cost(amount, "amount", allow_inf=False)
        checked = _check_limits(limits)
        self._maybe_reap()

        def run() -> bool:
            with _engine.write_txn(self._engine) as conn:
                _engine.lock_reservations(conn)
                self._running_row(conn, window_id)
                if not self._fits(conn, amount, checked):
                    return False
                conn.execute(
                    _RESERVE,
                    {
                        "w_id": int(window_id),
                        "a_energy_j": amount.energy_j,
                        "a_co2e_g": amount.co2e_g,
                        "a_usd": amount.usd,
                        "a_gpu_s": amount.gpu_s,
                    },
                )
                self._cache.pop(int(window_id), None)
                return True

        return self._guard(run)

    # -- crash safety -----------------------------------------------------------------------

    def reap(self, now: datetime | None = None) -> int:
        """Finalise as ``killed`` every running window silent for 3 checkpoint intervals.

        Its energy stays that of its last checkpoint and still counts as spent. Returns how
        many windows were reaped.
        """
        t = _now() if now is None else to_unix_s(now)
        stale = W.c.updated_unix_s < t - MISSED_INTERVALS * W.c.checkpoint_interval_s

        def run() -> int:
            with _engine.read_txn(self._engine) as conn:
                candidates = conn.execute(
                    sa.select(W.c.id, W.c.study)
                    .where(W.c.status == "running", _UNLINKED, stale)
                    .order_by(W.c.id)
                ).all()
            reaped = 0
            for window_id, study in candidates:  # one short transaction each
                if self._pg:
                    reaped += self._reap_sealed(int(window_id), str(study), stale)
                    continue
                with _engine.write_txn(self._engine) as conn:
                    # Chain head first, then the row: the order finalize() locks them in, so
                    # the two can never deadlock on PostgreSQL.
                    link = self._next_link(conn, study)
                    stmt = sa.select(W).where(W.c.id == window_id, W.c.status == "running", stale)
                    if conn.dialect.name != "sqlite":
                        stmt = stmt.with_for_update()
                    row = conn.execute(stmt).mappings().first()
                    if row is None:  # it checkpointed, finished or was reaped meanwhile
                        continue
                    final = {**row, "status": "killed", "ended_unix_s": row["updated_unix_s"]}
                    final = _linked({**final, "rev": int(row["rev"]) + 1}, link)
                    params = {**_params(window_id, final), "w_rev": row["rev"]}
                    conn.execute(_update(_FINAL_COLUMNS), params)  # row locked: it matches
                    self._store_head(conn, link, final["row_hash"])
                    self._cache.pop(int(window_id), None)
                    reaped += 1
            return reaped

        self._last_reap = time.monotonic()
        return self._guard(run)

    def _reap_sealed(self, window_id: int, study: str, stale: Any) -> int:
        """PostgreSQL: seal one silent window as killed (if it still is), then link it."""
        with _engine.single_statement(self._engine) as conn:
            stmt = sa.select(W).where(W.c.id == window_id, W.c.status == "running", stale)
            row = conn.execute(stmt).mappings().first()
            if row is None:  # it checkpointed, finished or was reaped meanwhile
                return 0
            final = {**row, "status": "killed", "ended_unix_s": row["updated_unix_s"]}
            final.update(rev=int(row["rev"]) + 1, seq=None, prev_hash=None)
            final["row_hash"] = _chain.seal(final)
            params = {**_params(window_id, final), "w_rev": row["rev"]}
            if _pg.update_running(conn, _FINAL_COLUMNS, params) != 1:
                return 0  # it checkpointed (new revision) since it was read
            self._cache.pop(window_id, None)
            self._link_sealed(conn, study, mine=final, what=f"window {window_id}")
            return 1

    def _maybe_reap(self) -> None:
        if time.monotonic() - self._last_reap < _REAP_EVERY_S:
            return
        try:
            self.reap()
        except LedgerError:
            # Read-only copies of a ledger can still be read; spent() and committed() already
            # treat a dead window correctly without the write.
            self._last_reap = time.monotonic()

    # -- reading ----------------------------------------------------------------------------

    def studies(self) -> list[str]:
        """Names of the studies with at least one window, sorted."""

        def run() -> list[str]:
            with _engine.read_txn(self._engine) as conn:
                stmt = sa.select(W.c.study).distinct().order_by(W.c.study)
                return [str(s) for s in conn.execute(stmt).scalars()]

        return self._guard(run)

    def entries(
        self, study: str | None = None, scope: Scope | None = None, *, open_only: bool = False
    ) -> pd.DataFrame:
        """One row per window, oldest first, with the columns of docs/contracts.md.

        Times are UTC datetimes; JSON fields are dicts / lists. A running window already silent
        for 3 checkpoint intervals is shown as ``killed`` (as :meth:`reap` would record it).
        ``open_only``: only windows not yet finalised (filtered in SQL, for callers on a hot
        path that look for running trials in a large study).
        """
        self._maybe_reap()
        scope = scope or Scope()
        if study is not None:
            scope = Scope(study, scope.project, scope.user, scope.since, scope.until)

        def run() -> list[RowMapping]:
            with _engine.read_txn(self._engine) as conn:
                stmt = sa.select(W).where(*_where(scope)).order_by(W.c.id)
                if open_only:
                    stmt = stmt.where(W.c.status == "running", _UNLINKED)
                return list(conn.execute(stmt).mappings())

        return _frame(self._guard(run), _now())

    def verify(self, study: str | None = None) -> VerifyReport:
        """Check every study's hash chain (or one study's); the report names the first bad row.

        Read-only. Sealed rows still waiting for their link are sound and counted in
        ``pending`` (a writer links them); an unlinked finished row without a matching seal is
        reported as inserted or edited.
        """
        finished = sa.or_(W.c.status.in_(_schema.FINISHED), W.c.seq.is_not(None))
        H = _schema.chain_heads

        def run() -> VerifyReport:
            with _engine.read_txn(self._engine) as conn:
                stmt = sa.select(W).where(finished)
                heads_stmt = sa.select(H)
                if study is not None:
                    stmt = stmt.where(W.c.study == study)
                    heads_stmt = heads_stmt.where(H.c.study == study)
                rows = [dict(r) for r in conn.execute(stmt.order_by(W.c.study, W.c.seq)).mappings()]
                heads = {h["study"]: dict(h) for h in conn.execute(heads_stmt).mappings()}
            by_study: dict[str, list[dict[str, Any]]] = {}
            for r in rows:
                by_study.setdefault(r["study"], []).append(r)
            names = sorted(set(by_study) | set(heads))
            problems = [
                p
                for name in names
                if (p := _chain.verify_study(name, by_study.get(name, []), heads.get(name)))
            ]
            pending = sum(1 for r in rows if _chain.is_sealed(r))
            return VerifyReport(
                studies=len(names), rows=len(rows), problems=problems, pending=pending
            )

        if study is not None:
            _check_name(study, "study")
        return self._guard(run)


# -- helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Link:
    """Where a finishing row goes in its study's chain."""

    study: str
    seq: int
    prev_hash: str
    exists: bool  # whether the study already has a head record


#: Ledgers of this process not yet garbage-collected (weak: this keeps none alive).
_OPEN: weakref.WeakSet[Ledger] = weakref.WeakSet()


@atexit.register
def _link_at_exit() -> None:
    # (A forked child links with connections of its own: the engines reopen after a fork.)
    for ledger in list(_OPEN):
        if ledger._unlinked:
            with contextlib.suppress(Exception):  # exiting: never turn an exit into an error
                ledger._link_left()


def _linked(row: dict[str, Any], link: _Link) -> dict[str, Any]:
    row = {**row, "seq": link.seq, "prev_hash": link.prev_hash}
    row["row_hash"] = _chain.row_hash(row, link.prev_hash)
    return row


def _cost(row: Mapping[str, Any]) -> Cost:
    return Cost(
        energy_j=float(row["energy_j"]),
        co2e_g=float(row["co2e_g"]),
        usd=float(row["usd"]),
        gpu_s=float(row["gpu_s"]),
    )


_RENAMED = {
    "user_name": "user",
    "started_unix_s": "started_at",
    "updated_unix_s": "updated_at",
    "ended_unix_s": "ended_at",
    "values_json": "values",
}
_JSON_COLUMNS = ("energy_by_domain", "sources", "devices", "params")


def _frame(rows: Sequence[RowMapping], now: float) -> pd.DataFrame:
    """Rows as the entries() frame. Column-wise, since a report may read 10,000+ rows."""
    if not rows:
        return pd.DataFrame(columns=list(ENTRY_COLUMNS))
    raw = pd.DataFrame.from_records(
        [tuple(r.values()) for r in rows], columns=list(rows[0].keys())
    ).rename(columns=_RENAMED)
    # A running row silent for MISSED_INTERVALS checkpoint intervals is shown as killed.
    silent = raw["updated_at"].astype("float64") < now - MISSED_INTERVALS * raw[
        "checkpoint_interval_s"
    ].astype("float64")
    raw.loc[(raw["status"] == "running") & silent, "status"] = "killed"
    for col in _JSON_COLUMNS:
        raw[col] = [json.loads(x) for x in raw[col]]
    raw["values"] = [json.loads(x) if isinstance(x, str) else None for x in raw["values"]]
    frame = raw.reindex(columns=list(ENTRY_COLUMNS))
    for col in ("started_at", "updated_at", "ended_at"):
        frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True)
    frame["value"] = frame["value"].astype("float64")
    for col in ("trial_number", "step", "seq"):
        frame[col] = frame[col].astype("Int64")
    return frame

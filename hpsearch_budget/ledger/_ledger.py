"""The energy ledger: one row per trial window, checkpointed, finalised, hash-chained.

The :class:`Ledger` class writes (open, checkpoint, finalise: the hot path) and delegates
the rest to modules with one job each: :mod:`._opening` (schema), :mod:`._linking` (the hash
chain), :mod:`._reservations` (budgets), :mod:`._reaping` (silent windows), :mod:`._reads`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

import pandas as pd
from sqlalchemy.engine import Connection

from hpsearch_budget.budget import Cost
from hpsearch_budget.carbon import CarbonModel, Footprint, HoldingIntensity, default_carbon_model
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import (
    _chain,
    _engine,
    _held,
    _linking,
    _pg,
    _reads,
    _reaping,
    _retry,
    _schema,
)
from hpsearch_budget.ledger._chain import VerifyReport
from hpsearch_budget.ledger._checks import check_cost as _check_cost
from hpsearch_budget.ledger._checks import check_count as _check_count
from hpsearch_budget.ledger._checks import check_limits as _check_limits
from hpsearch_budget.ledger._checks import check_measurement as _check_measurement
from hpsearch_budget.ledger._checks import check_name as _check_name
from hpsearch_budget.ledger._checks import check_reserve as _check_reserve
from hpsearch_budget.ledger._checks import check_status as _check_status
from hpsearch_budget.ledger._checks import check_window as _check_window
from hpsearch_budget.ledger._linking import OPEN as _OPEN
from hpsearch_budget.ledger._linking import linked as _linked
from hpsearch_budget.ledger._linking import next_link as _next_link
from hpsearch_budget.ledger._linking import sqlite_next_link as _sqlite_next_link
from hpsearch_budget.ledger._linking import sqlite_store_head as _sqlite_store_head
from hpsearch_budget.ledger._linking import store_head as _store_head
from hpsearch_budget.ledger._opening import open_schema as _open_schema
from hpsearch_budget.ledger._reads import ENTRY_COLUMNS as ENTRY_COLUMNS
from hpsearch_budget.ledger._reads import entries_frame as _frame
from hpsearch_budget.ledger._reads import row_cost as _cost
from hpsearch_budget.ledger._reservations import add_reservation as _add_reservation
from hpsearch_budget.ledger._reservations import fits as _fits
from hpsearch_budget.ledger._reservations import reserved as _reserved_now
from hpsearch_budget.ledger._reservations import reserved_after as _reserved_after
from hpsearch_budget.ledger._reservations import sums as _sums
from hpsearch_budget.ledger._reservations import with_reservation as _reserved
from hpsearch_budget.ledger._scope import Scope, to_unix_s
from hpsearch_budget.ledger._sqlite import SqliteSums as _SqliteSums
from hpsearch_budget.ledger._sqlite import sqlite_fits as _sqlite_fits
from hpsearch_budget.ledger._sqlite import sqlite_insert as _sqlite_insert
from hpsearch_budget.ledger._sqlite import sqlite_sql as _sqlite_sql
from hpsearch_budget.ledger._sqlite import sqlite_write as _sqlite_write
from hpsearch_budget.ledger._statements import FINAL_COLUMNS as _FINAL_COLUMNS
from hpsearch_budget.ledger._statements import MISSED_INTERVALS as MISSED_INTERVALS
from hpsearch_budget.ledger._statements import MUTABLE_COLUMNS as _MUTABLE_COLUMNS
from hpsearch_budget.ledger._statements import OPENED as _OPENED
from hpsearch_budget.ledger._statements import OPENED_BY as _OPENED_BY
from hpsearch_budget.ledger._statements import ROW as _ROW
from hpsearch_budget.ledger._statements import ROW_FOR_UPDATE as _ROW_FOR_UPDATE
from hpsearch_budget.ledger._statements import params as _params
from hpsearch_budget.ledger._statements import update as _update
from hpsearch_budget.meters import Measurement
from hpsearch_budget.units import j_to_kwh

W = _schema.windows
T = TypeVar("T")

#: What a seal writes that nobody changes after it (linking sets the chain columns).
_SEALED_COLUMNS = tuple(c for c in _FINAL_COLUMNS if c not in ("seq", "prev_hash", "row_hash"))

#: A change to a running window's row: the columns it sets, computed from the row as it is.
Change = Callable[[Mapping[str, Any]], dict[str, Any]]

#: At most one opportunistic reap per this many seconds per Ledger object.
_REAP_EVERY_S = 10.0


def default_carbon() -> CarbonModel:
    """The model used when nothing is said: world-average grid intensity, PUE 1.58 and the
    default electricity price (see :func:`hpsearch_budget.carbon.default_carbon_model`).
    Pass ``carbon=`` (or a lab policy's defaults) for your own grid."""
    return default_carbon_model()


def _now() -> float:
    # The machine's clock, read only in this module (through Ledger.now): tests replace it to
    # move time by hand.
    return time.time()


def _with_study(scope: Scope, study: str | None) -> Scope:
    """``scope`` narrowed to ``study`` (the readers' ``study`` argument), if one is given."""
    if study is None:
        return scope
    return Scope(study, scope.project, scope.user, scope.since, scope.until)


def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


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
        self._intensity = HoldingIntensity(self.carbon.intensity)  # see footprint()
        self._allow_other_tables = allow_other_tables
        self._create = create
        self._parsed = _engine.parse_url(self.url, write=create)
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
        # Set once the ledger is open: a call whose PostgreSQL connection broke then
        # reconnects and runs again (_retry); opening it does not, so that a wrong URL fails
        # at once.
        self._reconnects = False
        self._retry_s = _retry.retry_s()  # read once, like the lock timeout
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
        # window id -> the row a finalisation sent sealed (PostgreSQL), until it returns: a
        # finalisation retried after a broken connection recognises its own committed seal.
        self._sealing: dict[int, dict[str, Any]] = {}
        self._host = socket.gethostname()
        self._unlinked: set[str] = set()  # studies whose sealed rows a link failed to chain
        _OPEN.add(self)  # linked and closed at exit if never closed (_close_at_exit)
        self._sqlite_sums = _SqliteSums()  # spent / committed read incrementally (SQLite)
        # Seconds to add to this machine's clock to read the database server's (PostgreSQL):
        # every time the ledger writes or compares is on that one clock, so that workers on
        # machines whose clocks disagree agree on which windows are silent (reaping, committed).
        self._offset_s = 0.0
        try:
            self._guard(
                lambda: _open_schema(
                    self._engine, self._parsed, create=create, allow_other_tables=allow_other_tables
                )
            )
            if self._pg:
                self._offset_s = self._guard(
                    lambda: _engine.server_clock_offset_s(self._engine, _now)
                )
        except BaseException:
            self.close()
            raise
        self._reconnects = self._pg

    # -- plumbing ---------------------------------------------------------------------------

    def _guard(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run ``fn``, turning database errors into one-line LedgerErrors. On PostgreSQL a
        broken connection is not an error yet: ``fn`` runs again on a new one (every ``fn``
        given here writes once however often it runs; see _retry). ``retry=False``: one try."""
        try:
            return fn()
        except _engine.DATABASE_ERRORS as error:
            if not (self._reconnects and retry and _retry.is_disconnect(error)):
                raise _engine.translate(error, self._parsed) from None
            first = error
        return _retry.call_again(fn, first, self._parsed, self._reconnect, self._retry_s)

    def _reconnect(self) -> None:
        """Forget the pooled connections after one broke (a server restart breaks them all;
        without this each would fail one try in turn). This thread's held connection was
        dropped by its failing block; another thread's fails once and is dropped the same way."""
        self._engine.dispose()
        self._fast.dispose()

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
            # The next finalisation links them anyway: one try, so that closing (or exiting)
            # while the server is down does not wait out the retries.
            with contextlib.suppress(LedgerError):
                self._guard(lambda study=study: self._link_now(study), retry=False)  # type: ignore[misc]
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

    def now(self) -> float:
        """Now, in Unix seconds on the ledger's clock (the database server's on PostgreSQL)."""
        return _now() + self._offset_s

    def footprint(self, energy_j: float, when_unix_s: float) -> Footprint:
        """What ``energy_j`` spent at ``when_unix_s`` costs, as this ledger charges it: at the
        intensity in force then, or, while the carbon model's provider fails (a time series
        that ended, a live source that is down), at its last good value, labelled as held
        (:class:`~hpsearch_budget.carbon.HoldingIntensity`): a sweep never stops for it."""
        holder = self._intensity
        if holder.provider is not self.carbon.intensity:  # ``carbon`` was replaced
            holder = self._intensity = HoldingIntensity(self.carbon.intensity)
        return self.carbon.charge(energy_j, holder.at(datetime.fromtimestamp(when_unix_s, UTC)))

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
        row = self._new_row(
            study, trial_key, phase=phase, trial_number=trial_number, params=params,
            devices=devices, gpu_share=gpu_share, project=project, user=user,
            checkpoint_interval_s=checkpoint_interval_s,
        )  # fmt: skip
        if reserve is None:
            return self._open(row)
        amount, limits = _check_reserve(reserve)
        self._maybe_reap()
        return self._open_reserved(row, amount, limits)

    def _new_row(
        self,
        study: str,
        trial_key: str,
        *,
        phase: str,
        trial_number: int | None,
        params: Mapping[str, Any] | None,
        devices: Sequence[str],
        gpu_share: float,
        project: str | None,
        user: str | None,
        checkpoint_interval_s: float,
    ) -> dict[str, Any]:
        """A new window's row: running, nothing measured yet, at the intensity in force now."""
        now = self.now()
        intensity = self.footprint(0.0, now)
        return {
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

    def _open(self, row: dict[str, Any]) -> int:
        """Insert a new window's ``row`` in a write transaction of its own; its id."""
        tried = False

        def insert() -> int:
            nonlocal tried
            if self._sqlite:
                with _sqlite_write(self._engine) as db:
                    return _sqlite_insert(db, row)
            with self._held.session() as conn:
                # A retry (PostgreSQL, the connection broke): the first INSERT may have
                # committed without its answer arriving.
                found = self._opened(conn, row) if tried else None
                tried = True
                return self._insert(conn, row) if found is None else int(found["id"])

        window_id = self._guard(insert)
        self._cache[window_id] = {**row, "id": window_id}
        self._maybe_reap()
        return window_id

    def _open_reserved(
        self, row: dict[str, Any], amount: Cost, limits: Sequence[tuple[Scope, Cost]]
    ) -> tuple[int, bool]:
        """Insert a new window's ``row`` holding ``amount`` as its first reservation if that
        fits ``limits`` (else holding none), checked and written under the reservations lock;
        its id, and whether it holds the reservation."""

        tried = False

        def insert_reserved() -> tuple[int, bool]:
            nonlocal tried
            if self._sqlite:  # BEGIN IMMEDIATE: SQLite's write lock is the reservations lock
                with _sqlite_write(self._engine) as db:
                    fits = _sqlite_fits(db, amount, limits, self.now(), self._sqlite_sums)
                    return _sqlite_insert(db, _reserved(row, amount) if fits else row), fits
            # Durable, like try_reserve: on PostgreSQL the reservation lock and the INSERT
            # share one transaction (the fast engine commits statement by statement).
            with _engine.write_txn(self._engine) as conn:
                _engine.lock_reservations(conn)
                # The new row adds nothing to spent or committed until it is reserved, so
                # checking before the INSERT is checking after it.
                fits = _fits(conn, amount, limits, self.now(), self._sqlite_sums)
                found = self._opened(conn, row) if tried else None  # see _open
                tried = True
                if found is not None:  # it holds a reservation, or reserving 0 fits now
                    holds = any(_reserved_now(found)) or (fits and amount == Cost())
                    return int(found["id"]), holds
                return self._insert(conn, _reserved(row, amount) if fits else row), fits

        window_id, reserved = self._guard(insert_reserved)
        self._cache[window_id] = {**(_reserved(row, amount) if reserved else row), "id": window_id}
        return window_id, reserved

    def _opened(self, conn: Connection, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """The window an earlier try of this opening committed, if it did (see OPENED)."""
        found = conn.execute(_OPENED, {c: row[c] for c in _OPENED_BY}).mappings().first()
        return None if found is None else dict(found)

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
        _check_status(status)
        _check_measurement(measurement)
        change = self._finishing(measurement, status, step, value, values, params)
        finish = self._finish_sealed if self._pg else self._finish_linked
        try:
            return _cost(self._guard(lambda: finish(window_id, change)))
        finally:
            self._cache.pop(int(window_id), None)
            self._sealing.pop(int(window_id), None)

    def _finishing(
        self,
        measurement: Measurement,
        status: str,
        step: int | None,
        value: float | None,
        values: Sequence[float] | None,
        params: Mapping[str, Any] | None,
    ) -> Change:
        """The change :meth:`finalize` makes: the row charged for ``measurement``, ended with
        ``status``, and the step, value(s) and parameters given (``None`` keeps the row's)."""

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

        return change

    def _finish_linked(self, window_id: int, change: Change) -> dict[str, Any]:
        """SQLite: finish the row and link it, in one write transaction (SQLite's lock is
        global, so row and chain link go together); the row as written."""
        fast = self._sqlite_write_cached(window_id, change, final=True)
        if fast is not None:
            return fast
        with _engine.write_txn(self._engine) as conn:
            return self._write(conn, window_id, change, final=True)[0]

    def _finish_sealed(self, window_id: int, change: Change) -> dict[str, Any]:
        """PostgreSQL: finish the row sealed, then link it; the row as written.

        The sealed row commits durably on its own (writers that find the chain lock taken do
        not wait for it, so the WAL flushes of concurrent finalisations share one fsync); the
        sealing statement tries the lock, and its holder links on the same connection.
        """
        # The seal commits durably (it says so itself: _pg.seal_running). A failing
        # block drops its held connection, which may hold the chain lock.
        with self._held.session() as conn:
            row = self._sealed_before(conn, int(window_id))
            locked = None  # a seal found committed: linking tries the lock
            if row is None:
                row, locked = self._write(conn, window_id, change, final=True, seal=True)
            what = f"window {window_id}"
            self._link_sealed(conn, row["study"], mine=row, locked=locked, what=what)
            return row

    def _sealed_before(self, conn: Connection, window_id: int) -> dict[str, Any] | None:
        """The row an earlier try of this finalisation sealed, if its commit went through
        though the connection broke before the answer came (a retry, see _retry); None if
        no try sent a seal, or the row is not as that seal wrote it (still running, so it
        was not committed; or reaped meanwhile: finalising again says so)."""
        sent = self._sealing.get(window_id)
        if sent is None:
            return None
        row = conn.execute(_ROW, {"w_id": window_id}).mappings().first()
        # The chain columns may have been set since, by whoever linked the row.
        if row is None or any(row[c] != sent[c] for c in _SEALED_COLUMNS):
            return None
        return dict(row)

    def _link_sealed(
        self,
        conn: Connection,
        study: str,
        *,
        mine: Mapping[str, Any] | None = None,
        locked: bool | None = None,
        what: str = "a sealed row",
    ) -> int:
        """Link the study's sealed rows, or leave them to the writer linking it now (PostgreSQL;
        :func:`._linking.link_sealed_rows`); studies left unlinked are linked at :meth:`close`.
        Returns the rows linked."""
        return _linking.link_sealed_rows(
            conn,
            study,
            self._unlinked,
            self._parsed,
            self._link_pass,
            mine=mine,
            locked=locked,
            what=what,
        )

    def _link_pass(
        self, conn: Connection, study: str, mine: Mapping[str, Any] | None
    ) -> tuple[int, set[int]]:
        """Under the chain lock: link every sealed row of ``study`` once
        (:func:`._linking.link_pass`); (rows linked, ids whose seal no longer matches)."""
        return _linking.link_pass(conn, study, mine)

    def _link_now(self, study: str) -> int:
        """Link the study's sealed rows (:meth:`close`), unless another writer holds the chain
        lock: every row this process sealed was committed before this try, so the holder's
        last look, which follows the try, sees them (see :meth:`_link_sealed`)."""
        self._unlinked.discard(study)
        with _engine.single_statement(self._engine) as conn:
            return self._link_sealed(conn, study)

    def _write(
        self,
        conn: Connection,
        window_id: int,
        change: Change,
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
        link = _next_link(conn, row["study"]) if final and not seal else None
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
                self._sealing[window_id] = new  # see _sealed_before
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
                    _store_head(conn, link, new["row_hash"])
                self._cache[window_id] = new
                return new, locked
            self._cache.pop(window_id, None)
        raise LedgerError(f"window {window_id} changed while being written; retry")

    def _sqlite_write_cached(
        self,
        window_id: int,
        change: Change,
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
            # BEGIN IMMEDIATE already holds the chain (SQLite's one write lock).
            link = _sqlite_next_link(db, row["study"]) if final else None
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
                _sqlite_store_head(db, link, new["row_hash"])
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
        found = dict(row)
        spoilt = _reads.unreadable([found])  # a hand edit: charging it would fail half-way
        if spoilt is not None:
            raise spoilt
        return found

    def _charge(self, row: Mapping[str, Any], m: Measurement) -> dict[str, Any]:
        """The row's new figures after ``m`` (cumulative): charge only the energy added."""
        now = self.now()
        update: dict[str, Any] = {
            "updated_unix_s": now,
            "wall_s": max(float(row["wall_s"]), float(m.wall_s)),
        }
        devices = json.loads(row["devices"])
        update["gpu_s"] = update["wall_s"] * len(devices) * float(row["gpu_share"])
        delta_j = m.energy_j - float(row["energy_j"])
        if delta_j <= 0.0:  # nothing new (or a meter that restarted): keep what was charged
            return update
        fp = self.footprint(delta_j, now)
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

    # -- budget -----------------------------------------------------------------------------

    def spent(self, scope: Scope = Scope()) -> Cost:
        """What the rows in ``scope`` cost: finished rows plus running rows' last checkpoint."""

        def run() -> Cost:
            with _engine.read_txn(self._engine) as conn:
                return _sums(conn, scope, self.now(), self._sqlite_sums)[0]

        return self._guard(run)

    def committed(self, scope: Scope = Scope()) -> Cost:
        """Reserved but not yet spent by running windows in ``scope`` (dead ones excluded)."""

        def run() -> Cost:
            with _engine.read_txn(self._engine) as conn:
                return _sums(conn, scope, self.now(), self._sqlite_sums)[1]

        return self._guard(run)

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
        # The reservation an earlier try left the window with, once it sent its addition:
        # a retry (PostgreSQL, the connection broke at COMMIT) that finds it did commit.
        after: tuple[float, ...] | None = None

        def run() -> bool:
            nonlocal after
            with _engine.write_txn(self._engine) as conn:
                _engine.lock_reservations(conn)
                row = self._running_row(conn, window_id)
                if after is None or _reserved_now(row) != after:
                    if not _fits(conn, amount, checked, self.now(), self._sqlite_sums):
                        return False
                    after = _reserved_after(row, amount)
                    _add_reservation(conn, window_id, amount)
                self._cache.pop(int(window_id), None)
                return True

        return self._guard(run)

    # -- crash safety -----------------------------------------------------------------------

    def reap(self, now: datetime | None = None, *, windows: Sequence[int] | None = None) -> int:
        """Finalise as ``killed`` every running window silent for 3 checkpoint intervals.

        Its energy stays that of its last checkpoint and still counts as spent; its
        reservation is released. Returns how many windows were reaped. ``windows``: reap
        these running windows instead, silent or not: their writer is known to be dead
        (Optuna failed its trial by heartbeat), so nobody waits 3 intervals for them.
        """
        t = self.now() if now is None else to_unix_s(now)
        stale = _reaping.stale(t) if windows is None else _reaping.listed(windows)

        def run() -> int:
            reaped = 0
            for window_id, study in _reaping.silent_windows(self._engine, stale):
                # One short transaction each.
                if self._pg:
                    reaped += _reaping.reap_sealed(
                        self._engine,
                        int(window_id),
                        str(study),
                        stale,
                        self._cache,
                        self._link_sealed,
                    )
                else:
                    try:
                        reaped += _reaping.reap_linked(
                            self._engine, window_id, study, stale, self._cache
                        )
                    except (TypeError, ValueError):  # SQLite keeps what a hand edit writes
                        raise LedgerError(
                            f"window {window_id} cannot be reaped: its row or its study's "
                            "chain head holds what the ledger never writes (edited by hand); "
                            "restore the ledger from a backup"
                        ) from None
            return reaped

        if windows is None:  # a reap of named windows leaves the silent ones to the next
            self._last_reap = time.monotonic()
        return self._guard(run)

    def _maybe_reap(self) -> None:
        # A reader (create=False: hpaudit verify / show / export, reports) never writes:
        # entries(), spent() and committed() already treat a silent window as dead.
        if not self._create or time.monotonic() - self._last_reap < _REAP_EVERY_S:
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
        return self._guard(lambda: _reads.studies(self._engine))

    def study_totals(self) -> list[_reads.StudyTotal]:
        """Per study, sorted by name: its windows, their cost so far (as :meth:`spent` of the
        study) and whether any row's energy is estimated; summed in SQL."""
        return self._guard(lambda: _reads.study_totals(self._engine))

    def entries(
        self,
        study: str | None = None,
        scope: Scope | None = None,
        *,
        open_only: bool = False,
        newest: int | None = None,
    ) -> pd.DataFrame:
        """One row per window, oldest first, with the columns of docs/contracts.md.

        Times are UTC datetimes; JSON fields are dicts / lists. A running window already silent
        for 3 checkpoint intervals is shown as ``killed`` (as :meth:`reap` would record it).
        ``open_only``: only windows not yet finalised (filtered in SQL, for callers on a hot
        path that look for running trials in a large study). ``newest``: only the last
        ``newest`` windows (limited in SQL: ``hpaudit ledger show`` on a lab-wide ledger).
        """
        if newest is not None:
            _check_count(newest, "newest")
        self._maybe_reap()
        scope = _with_study(scope or Scope(), study)
        rows = self._guard(
            lambda: _reads.entry_rows(self._engine, scope, open_only=open_only, newest=newest)
        )
        return _frame(rows, self.now())

    def entry_chunks(
        self, study: str | None = None, scope: Scope | None = None, *, rows: int = 5000
    ) -> Iterator[pd.DataFrame]:
        """:meth:`entries` ``rows`` at a time, oldest first, from one read snapshot: an export
        of a lab-wide ledger holds one chunk, not every row (300,000 rows took 1.5-2 GB).

        At least one frame (empty, with the columns, for no rows). Consume it before the
        ledger is closed; the read stays open until the last chunk has been taken.
        """
        _check_count(rows, "rows")
        self._maybe_reap()
        scope = _with_study(scope or Scope(), study)
        now = self.now()  # one instant for every chunk, as entries() shows them
        try:
            for chunk in _reads.entry_row_chunks(self._engine, scope, rows):
                yield _frame(chunk, now)
        except _engine.DATABASE_ERRORS as error:  # no retry: the caller has written chunks
            raise _engine.translate(error, self._parsed) from None

    def verify(self, study: str | None = None) -> VerifyReport:
        """Check every study's hash chain (or one study's); the report names the first bad row.

        Read-only. Sealed rows still waiting for their link are sound and counted in
        ``pending`` (a writer links them); an unlinked finished row without a matching seal is
        reported as inserted or edited.
        """
        if study is not None:
            _check_name(study, "study")
        return self._guard(lambda: _reads.verify_chains(self._engine, study))

"""Connections held open per thread, for PostgreSQL's per-row statements.

Checking a connection out of SQLAlchemy's pool and back in costs ~40 µs of Python per call
(an opening and a finalisation each made one): with 8 writer processes and their 8 server
backends on 2 cores, that was a fifth of a finished row's client CPU. So each thread keeps one
autocommit connection per engine checked out for its hot writes (one round trip per
statement, as :func:`_engine.single_statement`), and gives it back only when the ledger closes.

A connection is per thread because the chain lock is a session-level advisory lock, which a
session may take twice: two threads sharing one session would both "hold" it. After a fork the
child opens its own (the parent's belong to the parent). A call that fails drops its
connection (``invalidate``: it may hold the chain lock, or be broken); the next call opens one.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from sqlalchemy.engine import Connection, Engine


class HeldConnections:
    """One autocommit connection of ``engine`` per thread, held between calls."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._held: dict[int, Connection] = {}  # thread ident -> its connection
        self._pid = os.getpid()

    @contextlib.contextmanager
    def session(self) -> Iterator[Connection]:
        """This thread's connection (opened on first use); dropped if the block raises."""
        conn = self._get()
        try:
            yield conn
        except BaseException:
            self._drop(conn)
            raise

    def _get(self) -> Connection:
        me = threading.get_ident()
        if self._pid != os.getpid():  # a forked child: the parent's sessions are not ours
            self._held, self._pid = {}, os.getpid()
        conn = self._held.get(me)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            with self._lock:
                self._forget_dead_threads()
                self._held[me] = conn
        return conn

    def _drop(self, conn: Connection) -> None:
        with self._lock:
            self._held = {k: c for k, c in self._held.items() if c is not conn}
        with contextlib.suppress(Exception):
            conn.invalidate()
            conn.close()

    def _forget_dead_threads(self) -> None:
        # Threads come and go (a thread pool per optimize() call): give back their connections.
        alive = {t.ident for t in threading.enumerate()}
        for ident in [k for k in self._held if k not in alive]:
            with contextlib.suppress(Exception):
                self._held.pop(ident).close()

    def close(self) -> None:
        """Give every held connection back (call before disposing of the engine)."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
        if self._pid != os.getpid():
            return  # the parent's: leave them to it
        for conn in held:
            with contextlib.suppress(Exception):
                conn.close()

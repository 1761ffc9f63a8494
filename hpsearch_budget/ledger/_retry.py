"""Riding out a dropped PostgreSQL connection: which errors mean the connection broke, and
calling again (reconnected, with a short backoff) until the server answers or time is up.

A server restart, ``pg_terminate_backend``, a proxy's idle timeout or a network blip break
the connection a call was using; the call is run again from its start on a new connection.
Every call the ledger retries is written so that running it twice writes once (a window
opening looks for the row an ambiguous commit may have left, a checkpoint or seal is guarded
by the row's revision, a reservation recognises its own total): see :class:`Ledger`.

SQLite never comes here: its errors are not disconnects, and the retry only runs from the
``except`` branch of :meth:`Ledger._guard`, so the calls that succeed pay nothing for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import URL

from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import _engine

T = TypeVar("T")

RETRY_ENV_VAR = "HPAUDIT_LEDGER_RETRY_S"
#: How long a ledger call keeps reconnecting after its PostgreSQL connection broke (a fast
#: server restart takes a few seconds); $HPAUDIT_LEDGER_RETRY_S overrides it, 0 turns it off.
DEFAULT_RETRY_S = 30.0

# SQLSTATEs of a session the server ended: admin_shutdown (pg_terminate_backend, a fast
# shutdown), crash_shutdown, cannot_connect_now (starting up / shutting down); class 08 is
# "connection exception". Other operational errors (lock timeout, cancel) are not retried.
_GONE = ("57P01", "57P02", "57P03")
_FIRST_DELAY_S = 0.05
_MAX_DELAY_S = 2.0


def retry_s() -> float:
    return _engine.env_seconds(
        RETRY_ENV_VAR, DEFAULT_RETRY_S, "a number of seconds >= 0 (0: never retry)", zero=True
    )


def is_disconnect(error: BaseException) -> bool:
    """Whether ``error`` means the connection to PostgreSQL broke (or cannot be made again
    yet), so that the call may succeed on a new one."""
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:  # SQLAlchemy's own verdict
            return True
        error = error.orig  # type: ignore[assignment]
    if not isinstance(error, _engine.DRIVER_OPERATIONAL):
        return False
    state = getattr(error, "sqlstate", None)
    # No SQLSTATE: libpq's own failure (server closed the connection, connection refused,
    # "the connection is closed"), not a statement the server refused.
    return state is None or state.startswith("08") or state in _GONE


def call_again(
    fn: Callable[[], T], first: Exception, url: URL, reconnect: Callable[[], None], budget: float
) -> T:
    """Run ``fn`` again after its first try failed with the disconnect ``first``: drop the
    dead connections (``reconnect``), wait a short, growing delay, and try again for up to
    ``budget`` seconds (:func:`retry_s`). Any other error is translated at once; out of time,
    a one-line LedgerError names the ledger and what to do."""
    deadline = time.monotonic() + budget
    delay, tries, error = _FIRST_DELAY_S, 1, first
    while True:
        reconnect()
        if time.monotonic() + delay > deadline:
            break
        time.sleep(delay)
        delay = min(_MAX_DELAY_S, delay * 2)
        tries += 1
        try:
            return fn()
        except _engine.DATABASE_ERRORS as again:
            if not is_disconnect(again):
                raise _engine.translate(again, url) from None
            error = again
    raise LedgerError(
        f"lost the connection to PostgreSQL ledger {_engine.describe(url)} and could not get "
        f"it back ({tries} tries in {budget:g} s; last: {_engine.first_line(error)}); what the "
        "ledger committed is kept: check that the server is up and reachable, then run again "
        f"(${RETRY_ENV_VAR} sets how long to keep retrying)"
    )

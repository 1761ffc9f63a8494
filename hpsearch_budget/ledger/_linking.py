"""Linking finished rows into their study's hash chain.

SQLite (and a reap): a finishing row is linked in its own write transaction, under the chain
head it locks first (:func:`next_link`, :func:`store_head`). PostgreSQL: a finishing row is
committed *sealed* and linked right after, by whichever writer holds the study's chain lock
(:func:`link_sealed_rows`); what a failed link leaves sealed is linked at :meth:`Ledger.close`
or, for a ledger never closed, at interpreter exit (:func:`_close_at_exit`).
"""

from __future__ import annotations

import atexit
import contextlib
import sqlite3
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc
from sqlalchemy.engine import URL, Connection

from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import _chain, _engine, _pg, _retry, _schema
from hpsearch_budget.ledger._sqlite import SQLITE_HEAD, SQLITE_HEAD_INSERT, SQLITE_HEAD_UPDATE
from hpsearch_budget.ledger._statements import HEAD_FOR_UPDATE, HEAD_UPDATE

if TYPE_CHECKING:
    from hpsearch_budget.ledger._ledger import Ledger

#: What a failed link may raise (the row stays sealed; see Ledger.finalize).
LINK_ERRORS: tuple[type[Exception], ...] = (
    exc.SQLAlchemyError,
    LedgerError,
    *_engine.DRIVER_ERRORS,
)

#: Link passes one finalisation makes at most while other writers keep sealing rows.
LINK_PASSES = 16


@dataclass(frozen=True)
class Link:
    """Where a finishing row goes in its study's chain."""

    study: str
    seq: int
    prev_hash: str
    exists: bool  # whether the study already has a head record


def linked(row: dict[str, Any], link: Link) -> dict[str, Any]:
    """``row`` placed at ``link``: its sequence number, previous hash and own hash set."""
    row = {**row, "seq": link.seq, "prev_hash": link.prev_hash}
    row["row_hash"] = _chain.row_hash(row, link.prev_hash)
    return row


# -- linked in the finishing transaction (SQLite, and reaps) ----------------------------------


def next_link(conn: Connection, study: str) -> Link:
    """Lock the study's chain and return where its next row goes (until commit).

    SQLite's finalisations and reaps; PostgreSQL seals and links instead (link_sealed_rows).
    """
    # PostgreSQL: locking the head row (FOR UPDATE re-reads it once the lock is ours) is the
    # chain lock in one round trip; a study's first link takes the advisory lock instead,
    # as there is no row to lock yet. SQLite: BEGIN IMMEDIATE already serialises writers.
    head = conn.execute(HEAD_FOR_UPDATE, {"s": study}).mappings().first()
    if head is None and conn.dialect.name != "sqlite":
        _engine.lock_chain(conn, study)
        head = conn.execute(HEAD_FOR_UPDATE, {"s": study}).mappings().first()
    if head is None:
        return Link(study, 1, _chain.GENESIS, exists=False)
    return _after_head(study, head["seq"], head["head_hash"])


def _after_head(study: str, seq: Any, head_hash: Any) -> Link:
    """The link after the study's chain head, which must be as the ledger writes it (an
    integer and a hash; SQLite keeps whatever a hand edit put there)."""
    if not _chain.is_seq(seq) or not isinstance(head_hash, str):
        raise LedgerError(
            f"study {study!r}: its chain head holds seq {seq!r}, which the ledger never writes "
            "(edited by hand); run `hpaudit verify` and restore the ledger from a backup"
        )
    return Link(study, int(seq) + 1, head_hash, exists=True)


def store_head(conn: Connection, link: Link, row_hash: str) -> None:
    """Make the row just linked at ``link`` (hashing to ``row_hash``) the study's head."""
    params = {"study": link.study, "seq": link.seq, "head_hash": row_hash}
    if link.exists:
        conn.execute(HEAD_UPDATE, {"s": link.study, "v_seq": link.seq, "v_head_hash": row_hash})
    else:
        conn.execute(_schema.chain_heads.insert(), params)


def sqlite_next_link(db: sqlite3.Connection, study: str) -> Link:
    """:func:`next_link` on a sqlite3 connection inside BEGIN IMMEDIATE (which already holds
    the chain: SQLite's one write lock)."""
    head = db.execute(SQLITE_HEAD, {"s": study}).fetchone()
    if head is None:
        return Link(study, 1, _chain.GENESIS, exists=False)
    return _after_head(study, head[0], head[1])


def sqlite_store_head(db: sqlite3.Connection, link: Link, row_hash: str) -> None:
    """:func:`store_head` on a sqlite3 connection."""
    head_params = {"s": link.study, "v_seq": link.seq, "v_head_hash": row_hash}
    db.execute(SQLITE_HEAD_UPDATE if link.exists else SQLITE_HEAD_INSERT, head_params)


# -- sealed first, linked after (PostgreSQL) --------------------------------------------------


def link_sealed_rows(
    conn: Connection,
    study: str,
    unlinked: set[str],
    url: URL,
    one_pass: Callable[[Connection, str, Mapping[str, Any] | None], tuple[int, set[int]]],
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
    finalisation links it, and the ledger's :meth:`Ledger.close` makes sure (a sealed row
    is sound meanwhile: :meth:`Ledger.verify` counts it as ``pending``). A link that fails
    leaves the rows sealed, for the next finalisation or ``close``. ``unlinked``: the
    ledger's studies left to link at close, added to here; ``url`` names it in errors;
    ``one_pass``: :func:`link_pass`, through the ledger (so that tests can make a link fail).
    Returns the rows linked.
    """
    if locked is False:
        unlinked.add(study)
        return 0
    linked_rows = 0
    skipped: set[int] = set()  # sealed rows whose seal no longer matches: never linked
    try:
        for attempt in range(LINK_PASSES):
            if not (attempt == 0 and locked) and not _pg.try_chain_lock(conn, study):
                return linked_rows  # the holder links every row it can see (see above)
            n, bad = one_pass(conn, study, mine)
            linked_rows += n
            skipped |= bad
            if not _pg.unlock_any_sealed(conn, study, sorted(skipped)):
                return linked_rows
        unlinked.add(study)  # still busy after every pass: close() links the rest
        return linked_rows
    except BaseException as error:
        # The connection may still hold the session lock: drop it (the server then
        # releases the lock), so that a pooled connection never carries it to another call.
        conn.invalidate()
        unlinked.add(study)
        if not isinstance(error, LINK_ERRORS) or _retry.is_disconnect(error):
            raise  # a broken connection: the ledger reconnects and the caller tries again
        text = error if isinstance(error, LedgerError) else _engine.translate(error, url)
        raise LedgerError(
            f"{text} ({what} is finalised and sealed; the study's next finalisation or "
            "Ledger.close() links it into the hash chain)"
        ) from None


def link_pass(conn: Connection, study: str, mine: Mapping[str, Any] | None) -> tuple[int, set[int]]:
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


# -- left sealed at exit ----------------------------------------------------------------------

#: Ledgers of this process not yet garbage-collected (weak: this keeps none alive).
OPEN: weakref.WeakSet[Ledger] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close every ledger left open: link its sealed rows (PostgreSQL) and release its
    connections. SQLite then folds the write-ahead log into the database file and deletes it,
    so a copy of ``ledger.db`` alone holds every row (without this the rows of a sweep that
    never called ``close()`` stayed in ``ledger.db-wal``)."""
    # (A forked child closes connections of its own: it forgets its parent's at the fork.)
    for ledger in list(OPEN):
        with contextlib.suppress(Exception):  # exiting: never turn an exit into an error
            ledger.close()

"""The per-study hash chain over finished rows, and its verification.

Each finished row gets the next sequence number of its study and
``row_hash = sha256(prev_hash + canonical JSON of the row)``; the study's newest link is also
kept in ``hpaudit_chain_heads``. An edited row no longer matches its hash, an inserted row breaks
the sequence or the link to its predecessor, a deleted row leaves a gap (or a head that points
past the end).

On PostgreSQL a finished row is first *sealed* (``row_hash = sha256("pending" + canonical JSON)``
with ``seq`` and ``prev_hash`` still empty, committed durably on its own) and then *linked*, by
one statement that does not wait for the WAL flush, under the study's chain lock, by whichever
writer holds it (it links every sealed row of the study): finalisations of one study then no
longer queue behind each other's disk flush. A sealed row is normally linked milliseconds after
it is sealed; one whose seal committed just after the holder's last look, or whose writer died
in between, stays sealed until the study's next finalisation (or its writer's
:meth:`Ledger.close`). :func:`verify_study` accepts a sealed row whose
seal matches (counted as pending) and names an unlinked row without a valid seal as inserted
or edited. Deleting a sealed row before it is linked is the one change that goes unseen.

The chain is tamper-*evident*: someone who rewrites every later row and the head
with the same algorithm is not detected; copy the head hashes elsewhere to guard against that.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Double, Integer

from hpsearch_budget.ledger import _schema

GENESIS = "0" * 64
#: What a sealed row's hash is computed over in place of a previous link.
PENDING = "pending"

# Every stored column except the hash itself takes part.
HASHED_COLUMNS = tuple(c.name for c in _schema.windows.columns if c.name != "row_hash")


# One encoder, made once: json.dumps() with options builds a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=True, default=str)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same text for the same values, everywhere."""
    return _CANONICAL.encode(value)


_DOUBLE = frozenset(c.name for c in _schema.windows.columns if isinstance(c.type, Double))
_INTEGER = frozenset(
    c.name for c in _schema.windows.columns if isinstance(c.type, Integer | BigInteger)
)


def _hashable(column: str, value: Any) -> Any:
    # The same number must hash the same whichever backend returned it (SQLite hands back a
    # REAL column's 1 as 1.0, a driver may hand back an int column as a Decimal).
    if value is None:
        return None
    if column in _DOUBLE:
        value = float(value)
        return "NaN" if math.isnan(value) else value
    if column in _INTEGER:
        return int(value)
    return value


# row_hash() runs 2-3 times per finished row: the per-column normalisation of _hashable,
# inlined over a precomputed (column, kind) table (same values, a third of the time).
_KINDS = tuple(
    (c, 1 if c in _DOUBLE else 2 if c in _INTEGER else 0) for c in HASHED_COLUMNS
)  # fmt: skip


#: What a driver hands back for a sound value of a column of each kind (1: double, 2: integer).
_NUMBER: dict[int, tuple[type, ...]] = {1: (numbers.Real, Decimal), 2: (numbers.Integral,)}


def is_seq(value: Any) -> bool:
    """Whether ``value`` is a chain position as the ledger writes it (an integer, not a bool:
    SQLite keeps whatever a hand edit writes, ``'zz'`` or ``1.5``)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def misfit(row: Mapping[str, Any]) -> str | None:
    """The first numeric column of ``row`` holding something that is not a number of its type
    (SQLite stores whatever a hand edit writes: ``energy_j = 'abc'``, ``seq = 1.5``), or None.
    Such a row cannot be hashed as it was written: it was edited."""
    for column, kind in _KINDS:
        value = row[column]
        if value is None or not kind:
            continue
        if isinstance(value, bool) or not isinstance(value, _NUMBER[kind]):
            return column
    return None


def row_hash(row: Mapping[str, Any], prev_hash: str) -> str:
    """sha256 over the previous link and the canonical JSON of every column but the hash."""
    return _sha256(prev_hash + _body(row))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _body(row: Mapping[str, Any]) -> str:
    body: dict[str, Any] = {}
    for column, kind in _KINDS:
        value = row[column]
        if value is not None and kind:
            if kind == 1:
                value = float(value)
                if value != value:  # NaN
                    value = "NaN"
            else:
                value = int(value)
        body[column] = value
    return _CANONICAL.encode(body)


def seal(row: Mapping[str, Any]) -> str:
    """The hash of a finished row not yet linked (``seq`` and ``prev_hash`` still None)."""
    return row_hash(row, PENDING)


def _unlinked_finished(row: Mapping[str, Any]) -> bool:
    """A finished row with a hash but no place in the chain: what a seal looks like."""
    return (
        row["seq"] is None
        and row["prev_hash"] is None
        and row["status"] in _schema.FINISHED
        and row["row_hash"] is not None
    )


def is_sealed(row: Mapping[str, Any]) -> bool:
    """Whether an unlinked finished row still carries the seal its writer gave it."""
    return _unlinked_finished(row) and misfit(row) is None and seal(row) == row["row_hash"]


# In a sealed row's canonical JSON the chain columns are null. JSON escapes every quote inside
# a string value, so these texts can only be the keys themselves (each appears once).
_NULL_PREV = '"prev_hash":null'
_NULL_SEQ = '"seq":null'


def link_sealed(row: Mapping[str, Any], seq: int, prev_hash: str) -> str | None:
    """A sealed row's hash once linked at ``seq`` after ``prev_hash``, or None if it does not
    carry a valid seal (:func:`is_sealed`). The same as checking the seal and then calling
    :func:`row_hash` on the linked row, from one JSON encoding of the row instead of two."""
    if not _unlinked_finished(row):
        return None
    body = _body(row)
    if _sha256(PENDING + body) != row["row_hash"]:
        return None
    linked = body.replace(_NULL_PREV, f'"prev_hash":"{prev_hash}"', 1)
    return _sha256(prev_hash + linked.replace(_NULL_SEQ, f'"seq":{int(seq)}', 1))


@dataclass(frozen=True)
class Problem:
    """The first row of a study's chain that does not check out."""

    study: str
    kind: str  # edited | inserted | deleted | unchained
    message: str
    row_id: int | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Ledger.verify` found: ``ok`` and, per broken study, its first bad row."""

    studies: int
    rows: int
    problems: list[Problem] = field(default_factory=list)
    #: Finished rows sealed but not yet linked (PostgreSQL, after a writer died in between).
    pending: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            waiting = f" ({self.pending} sealed, awaiting their link)" if self.pending else ""
            return (
                f"ledger sound: {self.rows} finished rows in {self.studies} studies "
                f"verified{waiting}"
            )
        return f"ledger NOT sound: {self.problems[0].message}"


def _edited(study: str, rid: int, seq: int) -> Problem:
    """A finalised row whose content no longer matches its chain."""
    return Problem(
        study,
        "edited",
        f"study {study!r}: row id {rid} (seq {seq}) was edited after it was finalised",
        rid,
        seq,
    )


def verify_study(
    study: str,
    rows: Sequence[Mapping[str, Any]],
    head: Mapping[str, Any] | None,
) -> Problem | None:
    """Check one study's finished rows (any order) against its chain; the first problem.

    Sealed rows waiting for their link (:func:`is_sealed`) are sound; other unlinked ones not.
    """
    for row in sorted(rows, key=lambda r: int(r["id"])):
        column = misfit(row)
        if column is not None:
            seq = int(row["seq"]) if is_seq(row["seq"]) else None
            return Problem(
                study,
                "edited",
                f"study {study!r}: row id {row['id']} holds {row[column]!r} in {column}, "
                "not a number of that column's type: edited after it was finalised",
                row["id"],
                seq,
            )
    if head is not None and not is_seq(head["seq"]):
        return Problem(
            study,
            "edited",
            f"study {study!r}: the chain head record holds seq {head['seq']!r}, not a "
            "number: the head was tampered with",
            None,
            None,
        )
    unchained = [r for r in rows if r["seq"] is None and not is_sealed(r)]
    chained = sorted((r for r in rows if r["seq"] is not None), key=lambda r: r["seq"])
    prev_hash = GENESIS
    previous: Mapping[str, Any] | None = None
    expected_seq = 1
    for row in chained:
        rid, seq = row["id"], row["seq"]
        if seq != expected_seq:
            if seq > expected_seq:
                return Problem(
                    study,
                    "deleted",
                    f"study {study!r}: row with seq {expected_seq} (before row id {rid}) "
                    "was deleted",
                    rid,
                    expected_seq,
                )
            return Problem(
                study,
                "inserted",
                f"study {study!r}: row id {rid} repeats seq {seq}: inserted",
                rid,
                seq,
            )
        if row["prev_hash"] != prev_hash:
            if previous is None:  # the first link must start from the genesis hash
                return _edited(study, rid, seq)
            # The row before passes its own hash check but is not what this row was chained to:
            # it was rewritten (hash and all) or slipped in.
            return Problem(
                study,
                "edited",
                f"study {study!r}: row id {previous['id']} (seq {previous['seq']}) was edited or "
                f"inserted: row id {rid} (seq {seq}) no longer links to it",
                previous["id"],
                previous["seq"],
            )
        if row_hash(row, prev_hash) != row["row_hash"]:
            return _edited(study, rid, seq)
        if row["status"] not in _schema.FINISHED:
            return Problem(
                study,
                "edited",
                f"study {study!r}: row id {rid} (seq {seq}) has status {row['status']!r}",
                rid,
                seq,
            )
        prev_hash = row["row_hash"]
        previous = row
        expected_seq += 1
    if unchained:
        r = unchained[0]
        return Problem(
            study,
            "inserted",
            f"study {study!r}: finished row id {r['id']} is not in the chain: inserted or edited",
            r["id"],
            None,
        )
    last_seq = expected_seq - 1
    if head is None:
        if chained:
            return Problem(
                study,
                "deleted",
                f"study {study!r}: the chain head record is missing (deleted)",
                None,
                None,
            )
        return None
    if head["seq"] > last_seq:
        return Problem(
            study,
            "deleted",
            f"study {study!r}: row with seq {last_seq + 1} (the chain's newest of {head['seq']}) "
            "was deleted",
            None,
            last_seq + 1,
        )
    if head["seq"] < last_seq:
        extra = chained[int(head["seq"])]
        return Problem(
            study,
            "inserted",
            f"study {study!r}: row id {extra['id']} (seq {extra['seq']}) was added after the "
            f"chain's last recorded link (seq {head['seq']}): inserted",
            extra["id"],
            extra["seq"],
        )
    if head["head_hash"] != prev_hash:
        newest = chained[-1] if chained else None
        return Problem(
            study,
            "edited",
            f"study {study!r}: the newest row (id {newest['id'] if newest else None}, seq "
            f"{last_seq}) does not match the chain head: edited, or the head was tampered with",
            newest["id"] if newest else None,
            last_seq,
        )
    return None

"""What the ledger reads back: a row's cost, the entries() frame, studies, chain checks."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import _chain, _engine, _schema
from hpsearch_budget.ledger._chain import VerifyReport
from hpsearch_budget.ledger._scope import Scope
from hpsearch_budget.ledger._statements import MISSED_INTERVALS, UNLINKED, W, where

#: The columns of :meth:`Ledger.entries`, in order (docs/contracts.md).
ENTRY_COLUMNS = (
    "id", "study", "trial_key", "trial_number", "phase", "status", "project", "user", "host",
    "pid", "started_at", "updated_at", "ended_at", "wall_s", "step", "energy_j",
    "energy_by_domain", "sources", "source", "gpu_s", "devices", "gpu_share", "pue",
    "g_per_kwh", "intensity_source", "co2e_g", "usd", "params", "value", "values",
    "reserved_energy_j", "reserved_co2e_g", "reserved_usd", "reserved_gpu_s", "row_hash",
    "seq", "checkpoint_interval_s",
)  # fmt: skip

#: Rows fetched at a time when streaming (verify): bounded memory, few round trips.
_STREAM_ROWS = 500

#: Table columns whose entries() name differs.
RENAMED = {
    "user_name": "user",
    "started_unix_s": "started_at",
    "updated_unix_s": "updated_at",
    "ended_unix_s": "ended_at",
    "values_json": "values",
}

#: The entries() columns that are float64 (what the ledger writes as double precision).
_FLOATS = tuple(
    RENAMED.get(c.name, c.name)
    for c in W.columns
    if isinstance(c.type, sa.Double)
    and RENAMED.get(c.name, c.name) not in ("started_at", "updated_at", "ended_at")
)

#: Columns stored as JSON text, shown decoded.
JSON_COLUMNS = ("energy_by_domain", "sources", "devices", "params")


def row_cost(row: Mapping[str, Any]) -> Cost:
    """What a window's row has cost so far."""
    return Cost(
        energy_j=float(row["energy_j"]),
        co2e_g=float(row["co2e_g"]),
        usd=float(row["usd"]),
        gpu_s=float(row["gpu_s"]),
    )


def entries_frame(rows: Sequence[RowMapping], now: float) -> pd.DataFrame:
    """Rows as the entries() frame. Column-wise, since a report may read 10,000+ rows.
    A row edited by hand into something unreadable is a LedgerError naming it."""
    try:
        return _entries_frame(rows, now)
    except (TypeError, ValueError):  # json.JSONDecodeError is a ValueError
        error = unreadable([dict(r) for r in rows])
        if error is None:
            raise
        raise error from None


def unreadable(rows: Sequence[Mapping[str, Any]]) -> LedgerError | None:
    """The error for the first of ``rows`` holding what the ledger never writes (a number
    column holding text, a JSON column holding no JSON): an edit by hand. None if none does."""
    for row in rows:
        column = _chain.misfit(row) or _not_json(row)
        if column is not None:
            return LedgerError(
                f"ledger row id {row['id']} holds {str(row[column])[:40]!r} in {column}, which "
                "the ledger never writes: it was edited by hand; restore the ledger from a "
                "backup (hpaudit verify names edited finished rows)"
            )
    return None


def _not_json(row: Mapping[str, Any]) -> str | None:
    """The first JSON column of ``row`` that does not hold JSON, or None."""
    for name in (*JSON_COLUMNS, "values_json"):
        if row[name] is None and name == "values_json":  # the one JSON column left empty
            continue
        try:
            json.loads(row[name])
        except (TypeError, ValueError):
            return name
    return None


def _entries_frame(rows: Sequence[RowMapping], now: float) -> pd.DataFrame:
    if not rows:  # the same column types as with rows (a caller may use .dt on the times)
        return _typed(pd.DataFrame(columns=list(ENTRY_COLUMNS)))
    raw = pd.DataFrame.from_records(
        [tuple(r.values()) for r in rows], columns=list(rows[0].keys())
    ).rename(columns=RENAMED)
    # A running row silent for MISSED_INTERVALS checkpoint intervals is shown as killed.
    silent = raw["updated_at"].astype("float64") < now - MISSED_INTERVALS * raw[
        "checkpoint_interval_s"
    ].astype("float64")
    raw.loc[(raw["status"] == "running") & silent, "status"] = "killed"
    for col in JSON_COLUMNS:
        raw[col] = [json.loads(x) for x in raw[col]]
    raw["values"] = [json.loads(x) if isinstance(x, str) else None for x in raw["values"]]
    return _typed(raw.reindex(columns=list(ENTRY_COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The entries() frame's times as UTC datetimes, figures as float, counters as Int64."""
    for col in ("started_at", "updated_at", "ended_at"):
        frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True).astype(
            "datetime64[ns, UTC]"
        )
    for col in _FLOATS:
        frame[col] = frame[col].astype("float64")
    for col in ("trial_number", "step", "seq"):
        frame[col] = frame[col].astype("Int64")
    return frame


def studies(engine: Engine) -> list[str]:
    """Names of the studies with at least one window, sorted."""
    with _engine.read_txn(engine) as conn:
        stmt = sa.select(W.c.study).distinct().order_by(W.c.study)
        return [str(s) for s in conn.execute(stmt).scalars()]


class StudyTotal(NamedTuple):
    """A study's windows, their cost so far, and whether any of its energy is estimated."""

    study: str
    windows: int
    cost: Cost
    estimated: bool


def study_totals(engine: Engine) -> list[StudyTotal]:
    """Every study's :class:`StudyTotal`, sorted by name: one aggregate over the ledger, not
    its rows (``hpaudit ledger studies`` read every study's rows into a frame to count them)."""
    sums = [sa.func.coalesce(sa.func.sum(W.c[c]), 0.0) for c in ("energy_j", "co2e_g", "usd",
                                                                 "gpu_s")]  # fmt: skip
    estimated = sa.func.max(sa.case((W.c.source == "estimated", 1), else_=0))
    stmt = (
        sa.select(W.c.study, sa.func.count(), *sums, estimated)
        .group_by(W.c.study)
        .order_by(W.c.study)
    )
    with _engine.read_txn(engine) as conn:
        if conn.dialect.name == "sqlite":  # SQL sums read a hand edit's text as 0: refuse it
            _refuse_edited(conn)
        return [
            StudyTotal(str(r[0]), int(r[1]), Cost(*(float(x) for x in r[2:6])), bool(r[6]))
            for r in conn.execute(stmt)
        ]


def _refuse_edited(conn: Any) -> None:
    """SQLite: raise :func:`unreadable`'s error for the first row holding what the ledger
    never writes (text in a number column, no JSON in a JSON one), found in SQL."""
    numbers = [c for c in W.columns if isinstance(c.type, sa.Double | sa.BigInteger)]
    bad = [sa.and_(c.is_not(None), sa.func.typeof(c).not_in(("real", "integer"))) for c in numbers]
    texts = [W.c[c] for c in (*JSON_COLUMNS, "values_json")]
    bad += [sa.and_(c.is_not(None), sa.func.json_valid(c) == 0) for c in texts]  # NULL: 0
    row = conn.execute(sa.select(W).where(sa.or_(*bad)).order_by(W.c.id).limit(1)).mappings()
    found = [dict(r) for r in row]
    error = unreadable(found) if found else None
    if error is not None:
        raise error


def entry_rows(
    engine: Engine, scope: Scope, *, open_only: bool, newest: int | None = None
) -> list[RowMapping]:
    """The rows of ``scope``, oldest first (``open_only``: only those not yet finalised;
    ``newest``: only the last so many, read newest first from the end of the id range)."""
    with _engine.read_txn(engine) as conn:
        stmt = sa.select(W).where(*where(scope))
        if open_only:
            stmt = stmt.where(W.c.status == "running", UNLINKED)
        if newest is None:
            return list(conn.execute(stmt.order_by(W.c.id)).mappings())
        return list(conn.execute(stmt.order_by(W.c.id.desc()).limit(newest)).mappings())[::-1]


def entry_row_chunks(engine: Engine, scope: Scope, rows: int) -> Iterator[Sequence[RowMapping]]:
    """The rows of ``scope`` in id order, ``rows`` at a time, from one read transaction (one
    snapshot: a row committed mid-export is in it whole or not at all). At least one chunk,
    empty for no rows, so that a writer still gets the columns. Memory holds one chunk."""
    with _engine.read_txn(engine) as conn:
        stmt = sa.select(W).where(*where(scope)).order_by(W.c.id)
        chunks = conn.execution_options(yield_per=rows).execute(stmt).mappings().partitions()
        yield next(chunks, [])
        yield from chunks


def verify_chains(engine: Engine, study: str | None) -> VerifyReport:
    """Check every study's hash chain (or ``study``'s), in one read transaction. Rows are
    streamed in (study, seq) order and checked a study at a time: memory holds one study's
    rows, not a lab ledger's (300,000 rows took 1 GB read all at once)."""
    finished = sa.or_(W.c.status.in_(_schema.FINISHED), W.c.seq.is_not(None))
    H = _schema.chain_heads
    found: dict[str, Any] = {}  # study -> its problem (or None)
    rows_seen = pending = 0
    with _engine.read_txn(engine) as conn:
        stmt = sa.select(W).where(finished)
        heads_stmt = sa.select(H)
        if study is not None:
            stmt = stmt.where(W.c.study == study)
            heads_stmt = heads_stmt.where(H.c.study == study)
        heads = {h["study"]: dict(h) for h in conn.execute(heads_stmt).mappings()}
        streamed = conn.execution_options(yield_per=_STREAM_ROWS).execute(
            stmt.order_by(W.c.study, W.c.seq)
        )
        for name, group in itertools.groupby(streamed.mappings(), key=lambda r: r["study"]):
            rows = [dict(r) for r in group]
            rows_seen += len(rows)
            pending += sum(1 for r in rows if _chain.is_sealed(r))
            found[name] = _chain.verify_study(name, rows, heads.get(name))
    for name in set(heads) - set(found):  # a head whose rows are all gone
        found[name] = _chain.verify_study(name, [], heads[name])
    problems = [p for name in sorted(found) if (p := found[name])]
    return VerifyReport(studies=len(found), rows=rows_seen, problems=problems, pending=pending)

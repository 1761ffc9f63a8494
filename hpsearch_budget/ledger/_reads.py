"""What the ledger reads back: a row's cost, the entries() frame, studies, chain checks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping

from hpsearch_budget.budget import Cost
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

#: Table columns whose entries() name differs.
RENAMED = {
    "user_name": "user",
    "started_unix_s": "started_at",
    "updated_unix_s": "updated_at",
    "ended_unix_s": "ended_at",
    "values_json": "values",
}

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
    """Rows as the entries() frame. Column-wise, since a report may read 10,000+ rows."""
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
    """The entries() frame's times as UTC datetimes, value as float, counters as Int64."""
    for col in ("started_at", "updated_at", "ended_at"):
        frame[col] = pd.to_datetime(frame[col].astype("float64"), unit="s", utc=True).astype(
            "datetime64[ns, UTC]"
        )
    frame["value"] = frame["value"].astype("float64")
    for col in ("trial_number", "step", "seq"):
        frame[col] = frame[col].astype("Int64")
    return frame


def studies(engine: Engine) -> list[str]:
    """Names of the studies with at least one window, sorted."""
    with _engine.read_txn(engine) as conn:
        stmt = sa.select(W.c.study).distinct().order_by(W.c.study)
        return [str(s) for s in conn.execute(stmt).scalars()]


def entry_rows(engine: Engine, scope: Scope, *, open_only: bool) -> list[RowMapping]:
    """The rows of ``scope``, oldest first (``open_only``: only those not yet finalised)."""
    with _engine.read_txn(engine) as conn:
        stmt = sa.select(W).where(*where(scope)).order_by(W.c.id)
        if open_only:
            stmt = stmt.where(W.c.status == "running", UNLINKED)
        return list(conn.execute(stmt).mappings())


def verify_chains(engine: Engine, study: str | None) -> VerifyReport:
    """Check every study's hash chain (or ``study``'s), in one read transaction."""
    finished = sa.or_(W.c.status.in_(_schema.FINISHED), W.c.seq.is_not(None))
    H = _schema.chain_heads
    with _engine.read_txn(engine) as conn:
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
    return VerifyReport(studies=len(names), rows=len(rows), problems=problems, pending=pending)

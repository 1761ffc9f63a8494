"""The ledger's SQL, built once as SQLAlchemy Core statements with bind parameters.

Building a statement with literal values costs SQLAlchemy more Python time than the database
takes to run it, so every hot statement is built here once and executed with parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from hpsearch_budget.ledger import _schema
from hpsearch_budget.ledger._scope import Scope, to_unix_s

W = _schema.windows

#: A running window silent for this many checkpoint intervals is taken for dead.
MISSED_INTERVALS = 3

#: True of every running row (``seq`` is set when a finished row is linked): said alongside
#: ``status = 'running'`` so that the partial index of unlinked rows can serve the query.
UNLINKED = W.c.seq.is_(None)


def where(scope: Scope) -> list[Any]:
    clauses: list[Any] = []
    if scope.study is not None:
        clauses.append(W.c.study == scope.study)
    if scope.project is not None:
        clauses.append(W.c.project == scope.project)
    if scope.user is not None:
        clauses.append(W.c.user_name == scope.user)
    if scope.since is not None:
        clauses.append(W.c.started_unix_s >= to_unix_s(scope.since))
    if scope.until is not None:
        clauses.append(W.c.started_unix_s < to_unix_s(scope.until))
    return clauses


# Statements are built once with bind parameters: building them with literal values costs
# SQLAlchemy more Python time than the database takes to run them.
FINAL_COLUMNS = tuple(c.name for c in W.columns if c.name != "id")


HEAD_FOR_UPDATE = (
    sa.select(_schema.chain_heads)
    .where(_schema.chain_heads.c.study == sa.bindparam("s"))
    .with_for_update()
)


HEAD_UPDATE = (
    _schema.chain_heads.update()
    .where(_schema.chain_heads.c.study == sa.bindparam("s"))
    .values(seq=sa.bindparam("v_seq"), head_hash=sa.bindparam("v_head_hash"))
)


ROW = sa.select(W).where(W.c.id == sa.bindparam("w_id"))


ROW_FOR_UPDATE = ROW.with_for_update()


# The window an opening wrote, found by what the writer chose itself: its study, trial key,
# host, pid and start time (its clock, to the sub-microsecond). A PostgreSQL opening retried
# after a broken connection looks for it first, since its first INSERT may have committed
# without the answer arriving; only that retry runs it, so no index is kept for it.
OPENED_BY = ("study", "trial_key", "host", "pid", "started_unix_s")
OPENED = sa.select(W).where(*(W.c[c] == sa.bindparam(c) for c in OPENED_BY))


RESERVE = (
    W.update()
    .where(W.c.id == sa.bindparam("w_id"))
    .values(
        {f"reserved_{n}": W.c[f"reserved_{n}"] + sa.bindparam(f"a_{n}", type_=sa.Double)
         for n in ("energy_j", "co2e_g", "usd", "gpu_s")}
        | {"rev": W.c.rev + 1}
    )
)  # fmt: skip


def sums_statement(scope: Scope) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The spent / committed aggregate for ``scope``: a cached statement and its parameters."""
    params = scope_params(scope)
    return sums_for(tuple(sorted(params))), params


def scope_params(scope: Scope) -> dict[str, Any]:
    """The bind parameters of ``scope`` (their keys name its clauses, see sums_for)."""
    params: dict[str, Any] = {}
    for name in ("study", "project", "user"):
        if getattr(scope, name) is not None:
            params[f"s_{name}"] = getattr(scope, name)
    if scope.since is not None:
        params["s_since"] = to_unix_s(scope.since)
    if scope.until is not None:
        params["s_until"] = to_unix_s(scope.until)
    return params


@functools.lru_cache(maxsize=32)
def sums_for(keys: tuple[str, ...]) -> sa.Select[Any]:
    # Built once per shape of scope, with bind parameters: building it per call cost SQLAlchemy
    # ~1 ms of Python, several times what SQLite takes to run it.
    now = sa.bindparam("now", type_=sa.Double)
    alive = sa.and_(
        W.c.status == "running",
        W.c.updated_unix_s >= now - MISSED_INTERVALS * W.c.checkpoint_interval_s,
    )
    cols = []
    for name in ("energy_j", "co2e_g", "usd", "gpu_s"):
        cols.append(sa.func.coalesce(sa.func.sum(W.c[name]), 0.0))
    for name in ("energy_j", "co2e_g", "usd", "gpu_s"):
        left = W.c[f"reserved_{name}"] - W.c[name]
        cols.append(
            sa.func.coalesce(sa.func.sum(sa.case((sa.and_(alive, left > 0), left), else_=0.0)), 0.0)
        )
    column = {"s_study": W.c.study, "s_project": W.c.project, "s_user": W.c.user_name}
    clauses: list[Any] = []
    for key in keys:
        if key in column:
            clauses.append(column[key] == sa.bindparam(key))
        elif key == "s_since":
            clauses.append(W.c.started_unix_s >= sa.bindparam(key, type_=sa.Double))
        else:
            clauses.append(W.c.started_unix_s < sa.bindparam(key, type_=sa.Double))
    return sa.select(*cols).where(*clauses)


# What a checkpoint may change (everything but identity, reservations and the chain).
MUTABLE_COLUMNS = tuple(
    ("updated_unix_s", "wall_s", "step", "energy_j", "energy_by_domain", "sources", "source",
     "gpu_s", "pue", "g_per_kwh", "intensity_source", "co2e_g", "usd", "value", "rev")
)  # fmt: skip


@functools.lru_cache(maxsize=64)
def update(columns: tuple[str, ...]) -> sa.Update:
    """UPDATE of a still-running window at a known revision (a reaped one is never touched)."""
    return (
        W.update()
        .where(
            W.c.id == sa.bindparam("w_id"),
            W.c.status == "running",
            W.c.rev == sa.bindparam("w_rev"),
        )
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )


def params(window_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
    return {"w_id": int(window_id), **{f"v_{k}": v for k, v in values.items() if k != "id"}}

"""Read a sweep from an Optuna storage, a Ray Tune folder or a ledger, into a :class:`Sweep`.

* Optuna RDB storages (``sqlite:///``, ``postgresql+psycopg://``) are read with one SQL query
  per table instead of ``study.get_trials()``: the report needs no intermediate values, only
  their count, and skipping Optuna's per-trial ORM objects makes it several times faster.
  Anything unexpected in the schema falls back to Optuna's own loader.
* Journal files (``.log`` / ``.jsonl``) go through Optuna's ``JournalStorage``.
* Ray Tune folders: each trial folder's ``params.json`` and ``result.json`` (JSON lines).
  Pickles (``*.pkl``) are never opened.
* A ledger URL: the ledger's tuning rows are the trials.

Energy per trial comes from the ledger (joined on study name + trial number) when one is given,
the study records it (its ``hpaudit_ledger`` attribute, a Ray result's ``hpaudit_ledger`` key:
:mod:`._recorded_ledger`) or it shares the storage's database, else from the trial's
``energy_kwh`` / ``co2e_kg`` / ``energy_source`` user attributes (or Ray result keys) written
by the integrations.

This module detects the source and reads Optuna storages; the Ray Tune reader lives in
:mod:`._source_ray`, the ledger reader and join in :mod:`._source_ledger` (``load_ray`` and
``load_ledger`` are imported from here too), what they share in :mod:`._source_common`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from hpsearch_budget._out_file import is_sqlite_file
from hpsearch_budget.analysis import Sweep
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._shareable import STUDY_ATTR, STUDY_NAME_ATTR
from hpsearch_budget.report._attempts import FAILED_TRIAL_ATTR, fold_retries, keep_retries
from hpsearch_budget.report._forecast import N_TRIALS_ATTR, PLANNED_TRIALS_KEY
from hpsearch_budget.report._recorded_ledger import join_ledger
from hpsearch_budget.report._source_common import (
    RECORDED_LEDGER_KEY,
    RECORDED_STUDY_KEY,
    Progress,
    _energy_from_attrs,
    _nothing,
    _pick,
    _redact,
    optuna_times,
    rdb_times,
)
from hpsearch_budget.report._source_ledger import load_ledger
from hpsearch_budget.report._source_ray import load_ray

_OPTUNA_STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "running",
}
_ENERGY_ATTRS = ("energy_kwh", "co2e_kg", "energy_source")
_JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")


def load_sweep(
    source: str,
    *,
    study: str | None = None,
    ledger: str | None = None,
    direction: str | None = None,
    metric: str | None = None,
    progress: Progress = _nothing,
    find_ledger: bool = True,
) -> Sweep:
    """Detect what ``source`` is and read the sweep from it (see the module docstring).

    An Optuna study without ``ledger`` joins the ledger it records (its ``hpaudit_ledger``
    attribute) or one in its own database, a Ray Tune folder the one its trials' results
    record (their ``hpaudit_ledger`` key), unless ``find_ledger`` is False
    (:mod:`._recorded_ledger`).
    """
    if not isinstance(source, str) or not source.strip():
        raise HpauditInputError(
            "SOURCE must be an Optuna storage URL, a Ray Tune folder or a ledger URL"
        )
    source = source.strip()
    path = Path(source)
    if "://" not in source and path.is_dir():
        sweep = load_ray(path, metric=metric, direction=direction, progress=progress)
        _check_ray_study(sweep, study)
        return join_ledger(sweep, ledger, progress, find=find_ledger, ray=True)
    if metric is not None:
        raise HpauditInputError(
            "--metric picks a Ray Tune folder's metric; an Optuna study or a ledger has one "
            "objective value per trial: drop --metric"
        )
    if "://" not in source:
        if not path.exists():
            raise HpauditInputError(
                f"{source!r} is neither a URL nor an existing file or folder; give an Optuna "
                "storage URL (sqlite:///study.db), a journal file, a Ray Tune folder or a "
                "ledger URL"
            )
        if path.suffix.lower() in _JOURNAL_SUFFIXES or not is_sqlite_file(path):
            sweep = load_optuna_journal(path, study=study, progress=progress)
            _check_direction(sweep, direction)
            return join_ledger(sweep, ledger, progress, find=find_ledger)
        source = f"sqlite:///{path}"
    tables = _tables(source)
    if {"studies", "trials"} <= tables:
        sweep = load_optuna_rdb(source, study=study, progress=progress)
        _check_direction(sweep, direction)
        colocated = source if "hpaudit_windows" in tables else None  # shares the study's db
        return join_ledger(sweep, ledger, progress, find=find_ledger, colocated=colocated)
    if "hpaudit_windows" in tables:
        if not find_ledger:
            raise HpauditInputError(
                "--no-ledger leaves out an Optuna study's ledger, but SOURCE is a ledger: "
                "drop --no-ledger, or give the Optuna storage as SOURCE"
            )
        return load_ledger(source, study=study, direction=direction, progress=progress)
    raise HpauditInputError(
        f"{_redact(source)} holds neither an Optuna study nor an hpaudit ledger "
        "(no 'trials' or 'hpaudit_windows' table); check the URL"
    )


def _check_direction(sweep: Sweep, direction: str | None) -> None:
    """An Optuna study records its direction: a ``direction`` given as well must agree."""
    if direction is not None and direction != sweep.direction:
        raise HpauditInputError(
            f"--direction {direction} contradicts study {sweep.study!r}, which Optuna records "
            f"as {sweep.direction}: drop --direction"
        )


def _check_ray_study(sweep: Sweep, study: str | None) -> None:
    """A Ray Tune folder holds one experiment: a ``study`` given must be its name."""
    if study is not None and study != sweep.study:
        raise HpauditInputError(
            f"the Ray Tune folder holds experiment {sweep.study!r}, not {study!r}: drop --study "
            "or give the folder of that experiment"
        )


def _engine(url: str) -> sa.Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise HpauditInputError(f"not a database URL: {url!r}; use sqlite:///path.db") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        # Any other scheme would fail deep in SQLAlchemy (missing dialect or driver).
        raise HpauditInputError(
            f"unsupported database URL scheme {parsed.drivername!r}; use sqlite:///path.db "
            "or postgresql+psycopg://user@host/db"
        )
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if not db or db == ":memory:" or not Path(db).is_file():
            raise HpauditInputError(f"no such SQLite file: {db!r}; check the path in {url!r}")
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return sa.create_engine(parsed)


def _tables(url: str) -> set[str]:
    engine = _engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise HpauditInputError(
            f"cannot open {_redact(url)}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()


# -- Optuna RDB ---------------------------------------------------------------------------


def load_optuna_rdb(url: str, *, study: str | None = None, progress: Progress = _nothing) -> Sweep:
    """Read one study of an Optuna RDB storage with one query per table."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            names = [r[0] for r in conn.execute(sa.text("SELECT study_name FROM studies"))]
            name = _pick("Optuna storage", study, names)
            progress("reading trials")
            try:
                return _read_rdb(conn, name, url)
            except (sa.exc.SQLAlchemyError, KeyError, ValueError) as exc:  # schema drift
                progress(f"fast reader failed ({type(exc).__name__}); using Optuna's loader")
    finally:
        engine.dispose()
    return _load_with_optuna(url, name, _redact(url))


def _read_rdb(conn: sa.Connection, name: str, url: str) -> Sweep:
    """Study ``name``, read with one query per table (see the module docstring)."""
    sid = conn.execute(
        sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
    ).scalar_one()
    p = {"s": sid}
    dirs = conn.execute(
        sa.text("SELECT objective, direction FROM study_directions WHERE study_id = :s"), p
    ).all()
    dirs = sorted(dirs)
    direction = "maximize" if dirs and str(dirs[0][1]).upper().endswith("MAXIMIZE") else "minimize"
    trials, retried = _rdb_trials(conn, p)
    attrs = conn.execute(
        sa.text(
            "SELECT key, value_json FROM study_user_attributes "
            "WHERE study_id = :s AND key IN (:plan, :ledger, :name)"
        ),
        {"s": sid, "plan": N_TRIALS_ATTR, "ledger": STUDY_ATTR, "name": STUDY_NAME_ATTR},
    ).all()
    sweep = Sweep(
        study=name,
        trials=fold_retries(trials.drop(columns=["trial_id"]), retried),
        direction=direction,
        source_kind="optuna",
        source=_redact(url),
        notes=["multi-objective study: the first objective is analysed"] if len(dirs) > 1 else [],
    )
    _keep_study_attrs(sweep, {key: json.loads(value) for key, value in attrs})
    keep_retries(sweep, retried)
    return sweep


def _keep_study_attrs(sweep: Sweep, attrs: dict[str, Any]) -> None:
    """Keep the study user attributes the report reads: the planned number of trials (the
    forecast's), the recorded ledger URL and the study's name in it (:func:`load_sweep` joins
    it)."""
    if N_TRIALS_ATTR in attrs:
        sweep.cache[PLANNED_TRIALS_KEY] = attrs[N_TRIALS_ATTR]
    if isinstance(attrs.get(STUDY_ATTR), str):
        sweep.cache[RECORDED_LEDGER_KEY] = attrs[STUDY_ATTR]
    if isinstance(attrs.get(STUDY_NAME_ATTR), str):
        sweep.cache[RECORDED_STUDY_KEY] = attrs[STUDY_NAME_ATTR]


#: Restricts a query on a per-trial table ``x`` to the trials of study ``:s``.
_OF_STUDY = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :s"


def _rdb_trials(conn: sa.Connection, p: dict[str, Any]) -> tuple[pd.DataFrame, dict[int, int]]:
    """The study's trials (by ``trial_id``), each with its value, params, steps and energy;
    and its heartbeat retries: {retry's number: first attempt's}."""
    trials = pd.DataFrame(
        conn.execute(
            sa.text(
                "SELECT trial_id, number, state, datetime_start, datetime_complete "
                "FROM trials WHERE study_id = :s"
            ),
            p,
        ).all(),
        columns=["trial_id", "number", "state", "started_at", "ended_at"],
    )
    value_of = _rdb_values(conn, p)
    par, dis = _rdb_params(conn, p)
    step_of = _rdb_steps(conn, p)
    attr = _rdb_energy_attrs(conn, p)
    tids = trials["trial_id"].tolist()
    trials["state"] = [_OPTUNA_STATES.get(str(s).upper(), "failed") for s in trials["state"]]
    trials["value"] = [value_of.get(t, math.nan) for t in tids]
    trials["params"] = [par.get(t, {}) for t in tids]
    trials["distributions"] = [dis.get(t, {}) for t in tids]
    trials["steps"] = [step_of.get(t, 0) for t in tids]
    for col in ("started_at", "ended_at"):
        trials[col] = rdb_times(trials[col]).set_axis(trials.index)
    _energy_from_attrs(trials, [attr.get(t, {}) for t in tids])
    number_of = dict(zip(tids, trials["number"], strict=True))
    retried = {int(number_of[tid]): first for tid, first in _rdb_retries(conn, p).items()}
    return trials, retried


def _rdb_values(conn: sa.Connection, p: dict[str, Any]) -> dict[int, float]:
    """Each trial's value of the first objective."""
    values = conn.execute(
        sa.text(
            "SELECT x.trial_id, x.value, x.value_type "
            f"FROM trial_values x {_OF_STUDY} AND x.objective = 0"
        ),
        p,
    ).all()
    # Optuna stores infinite values as a value type, with no number.
    inf = {"INF_POS": math.inf, "INF_NEG": -math.inf}
    return {tid: (inf[vt] if str(vt) in inf else v) for tid, v, vt in values}


def _rdb_params(
    conn: sa.Connection, p: dict[str, Any]
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Each trial's params (as the objective saw them) and their distributions."""
    from optuna.distributions import json_to_distribution

    params = conn.execute(
        sa.text(
            "SELECT x.trial_id, x.param_name, x.param_value, x.distribution_json "
            f"FROM trial_params x {_OF_STUDY}"
        ),
        p,
    ).all()
    # Trials share a handful of distributions: parse each JSON text once.
    dist_cache: dict[str, Any] = {}
    par: dict[int, dict[str, Any]] = {}
    dis: dict[int, dict[str, Any]] = {}
    for tid, pname, pval, djson in params:
        d = dist_cache.get(djson)
        if d is None:
            d = dist_cache[djson] = json_to_distribution(djson)
        par.setdefault(tid, {})[pname] = d.to_external_repr(pval)
        dis.setdefault(tid, {})[pname] = d
    return par, dis


def _rdb_steps(conn: sa.Connection, p: dict[str, Any]) -> dict[int, int]:
    """Each trial's number of intermediate values: their count, not the values themselves."""
    steps = conn.execute(
        sa.text(
            "SELECT x.trial_id, COUNT(*) "
            f"FROM trial_intermediate_values x {_OF_STUDY} GROUP BY x.trial_id"
        ),
        p,
    ).all()
    return {int(tid): int(count) for tid, count in steps}


def _rdb_energy_attrs(conn: sa.Connection, p: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Each trial's energy user attributes (set by the Optuna integration), decoded."""
    attrs = conn.execute(
        sa.text(
            f"SELECT x.trial_id, x.key, x.value_json FROM trial_user_attributes x {_OF_STUDY} "
            "AND x.key IN ('energy_kwh', 'co2e_kg', 'energy_source')"
        ),
        p,
    ).all()
    attr: dict[int, dict[str, Any]] = {}
    for tid, key, vjson in attrs:
        attr.setdefault(tid, {})[key] = json.loads(vjson)
    return attr


def _rdb_retries(conn: sa.Connection, p: dict[str, Any]) -> dict[int, int]:
    """Each heartbeat retry's first attempt (its ``failed_trial`` system attribute), by the
    retry's ``trial_id``."""
    retries = conn.execute(
        sa.text(
            f"SELECT x.trial_id, x.value_json FROM trial_system_attributes x {_OF_STUDY} "
            "AND x.key = :k"
        ),
        {**p, "k": FAILED_TRIAL_ATTR},
    ).all()
    return {int(tid): int(json.loads(vjson)) for tid, vjson in retries}


def _load_with_optuna(storage: Any, name: str | None, source: str) -> Sweep:
    """Study ``name`` through Optuna's own loader; ``source``: what the report calls it (a URL
    with its password hidden, a journal's path)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summaries = optuna.get_all_study_summaries(storage)
    name = _pick("Optuna storage", name, [s.study_name for s in summaries])
    study = optuna.load_study(study_name=name, storage=storage)
    sweep = sweep_from_frozen(
        name,
        study.get_trials(deepcopy=False),
        direction=study.directions[0].name.lower(),
        source_kind="optuna",
        source=source,
        multi=len(study.directions) > 1,
    )
    _keep_study_attrs(sweep, study.user_attrs)
    return sweep


def sweep_from_frozen(
    name: str,
    frozen: Iterable[Any],
    *,
    direction: str,
    source_kind: str = "optuna",
    source: str = "",
    multi: bool = False,
) -> Sweep:
    """A :class:`Sweep` from Optuna ``FrozenTrial`` objects (any storage, or a study in memory)."""
    rows = []
    attrs = []
    retried = {}
    for t in frozen:
        if FAILED_TRIAL_ATTR in t.system_attrs:
            retried[t.number] = int(t.system_attrs[FAILED_TRIAL_ATTR])
        rows.append(
            {
                "number": t.number,
                "state": _OPTUNA_STATES.get(t.state.name, "failed"),
                "value": t.values[0] if t.values else math.nan,
                "params": dict(t.params),
                "distributions": dict(t.distributions),
                "started_at": t.datetime_start,
                "ended_at": t.datetime_complete,
                "steps": len(t.intermediate_values),
            }
        )
        attrs.append({k: t.user_attrs.get(k) for k in _ENERGY_ATTRS})
    trials = pd.DataFrame(
        rows,
        columns=[
            "number",
            "state",
            "value",
            "params",
            "distributions",
            "started_at",
            "ended_at",
            "steps",
        ],
    )
    for col in ("started_at", "ended_at"):
        trials[col] = optuna_times(trials[col]).set_axis(trials.index)
    _energy_from_attrs(trials, attrs)
    notes = ["multi-objective study: the first objective is analysed"] if multi else []
    sweep = Sweep(name, fold_retries(trials, retried), direction, source_kind, source, notes=notes)
    keep_retries(sweep, retried)
    return sweep


def load_optuna_journal(
    path: Path, *, study: str | None = None, progress: Progress = _nothing
) -> Sweep:
    """Read a study from an Optuna journal file."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    progress("reading journal")
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        if not storage.get_all_studies():
            # Any text file replays as an empty journal; say so instead of "0 studies".
            raise HpauditInputError(
                f"{str(path)!r} holds no Optuna study: it is empty or not an Optuna journal "
                "file; give a journal (.log), an SQLite file or a storage URL"
            )
        return _load_with_optuna(storage, study, str(path))
    except HpauditInputError:
        raise
    except Exception as exc:
        raise HpauditInputError(
            f"{str(path)!r} is not a readable Optuna journal file ({type(exc).__name__}); "
            "give a journal (.log), an SQLite file or a storage URL"
        ) from None

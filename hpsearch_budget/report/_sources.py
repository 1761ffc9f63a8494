"""Read a sweep from an Optuna storage, a Ray Tune folder or a ledger, into a :class:`Sweep`.

* Optuna RDB storages (``sqlite:///``, ``postgresql+psycopg://``) are read with one SQL query
  per table instead of ``study.get_trials()``: the report needs no intermediate values, only
  their count, and skipping Optuna's per-trial ORM objects makes it several times faster.
  Anything unexpected in the schema falls back to Optuna's own loader.
* Journal files (``.log`` / ``.jsonl``) go through Optuna's ``JournalStorage``.
* Ray Tune folders: each trial folder's ``params.json`` and ``result.json`` (JSON lines).
  Pickles (``*.pkl``) are never opened.
* A ledger URL: the ledger's tuning rows are the trials.

Energy per trial comes from the ledger (joined on study name + trial number) when one is given
or shares the storage's database, else from the trial's ``energy_kwh`` / ``co2e_kg`` /
``energy_source`` user attributes (or Ray result keys) written by the integrations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.analysis._sweep import RUN_COLUMNS
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.report._forecast import N_TRIALS_ATTR, PLANNED_TRIALS_KEY
from hpsearch_budget.units import g_to_kg, j_to_kwh, kg_to_g, kwh_to_j

Progress = Callable[[str], None]

_OPTUNA_STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "running",
}
_ENERGY_ATTRS = ("energy_kwh", "co2e_kg", "energy_source")
_JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")


def _nothing(_: str) -> None:
    pass


def load_sweep(
    source: str,
    *,
    study: str | None = None,
    ledger: str | None = None,
    direction: str | None = None,
    metric: str | None = None,
    progress: Progress = _nothing,
) -> Sweep:
    """Detect what ``source`` is and read the sweep from it (see the module docstring)."""
    if not isinstance(source, str) or not source.strip():
        raise HpauditInputError(
            "SOURCE must be an Optuna storage URL, a Ray Tune folder or a ledger URL"
        )
    source = source.strip()
    path = Path(source)
    if "://" not in source and path.is_dir():
        sweep = load_ray(path, metric=metric, direction=direction, progress=progress)
        return _with_ledger(sweep, ledger, progress, ray=True)
    if "://" not in source:
        if not path.exists():
            raise HpauditInputError(
                f"{source!r} is neither a URL nor an existing file or folder; give an Optuna "
                "storage URL (sqlite:///study.db), a journal file, a Ray Tune folder or a "
                "ledger URL"
            )
        if path.suffix.lower() in _JOURNAL_SUFFIXES or not _is_sqlite_file(path):
            sweep = load_optuna_journal(path, study=study, progress=progress)
            return _with_ledger(sweep, ledger, progress)
        source = f"sqlite:///{path}"
    tables = _tables(source)
    if {"studies", "trials"} <= tables:
        sweep = load_optuna_rdb(source, study=study, progress=progress)
        if ledger is None and "hpaudit_windows" in tables:
            ledger = source  # a ledger sharing the study's database
        return _with_ledger(sweep, ledger, progress)
    if "hpaudit_windows" in tables:
        return load_ledger(source, study=study, direction=direction, progress=progress)
    raise HpauditInputError(
        f"{_redact(source)} holds neither an Optuna study nor an hpaudit ledger "
        "(no 'trials' or 'hpaudit_windows' table); check the URL"
    )


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "the given URL"


def _is_sqlite_file(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


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


def _missing_study(kind: str, study: str | None, names: list[str]) -> HpauditInputError:
    listed = ", ".join(repr(n) for n in names[:20]) or "none"
    if study is None:
        return HpauditInputError(
            f"the {kind} holds {len(names)} studies; pick one with --study (studies: {listed})"
        )
    return HpauditInputError(f"no study {study!r} in the {kind}; studies: {listed}")


def _pick(kind: str, study: str | None, names: list[str]) -> str:
    if study is not None and study in names:
        return study
    if study is None and len(names) == 1:
        return names[0]
    raise _missing_study(kind, study, names)


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
    return _load_with_optuna(url, name)


def _read_rdb(conn: sa.Connection, name: str, url: str) -> Sweep:
    from optuna.distributions import json_to_distribution

    sid = conn.execute(
        sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
    ).scalar_one()
    p = {"s": sid}
    dirs = conn.execute(
        sa.text("SELECT objective, direction FROM study_directions WHERE study_id = :s"), p
    ).all()
    dirs = sorted(dirs)
    direction = "maximize" if dirs and str(dirs[0][1]).upper().endswith("MAXIMIZE") else "minimize"
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
    join = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :s"
    values = conn.execute(
        sa.text(
            "SELECT x.trial_id, x.value, x.value_type "
            f"FROM trial_values x {join} AND x.objective = 0"
        ),
        p,
    ).all()
    params = conn.execute(
        sa.text(
            "SELECT x.trial_id, x.param_name, x.param_value, x.distribution_json "
            f"FROM trial_params x {join}"
        ),
        p,
    ).all()
    steps = conn.execute(
        sa.text(
            "SELECT x.trial_id, COUNT(*) "
            f"FROM trial_intermediate_values x {join} GROUP BY x.trial_id"
        ),
        p,
    ).all()
    attrs = conn.execute(
        sa.text(
            f"SELECT x.trial_id, x.key, x.value_json FROM trial_user_attributes x {join} "
            "AND x.key IN ('energy_kwh', 'co2e_kg', 'energy_source')"
        ),
        p,
    ).all()

    inf = {"INF_POS": math.inf, "INF_NEG": -math.inf}
    value_of = {tid: (inf[vt] if str(vt) in inf else v) for tid, v, vt in values}
    dist_cache: dict[str, Any] = {}
    par: dict[int, dict[str, Any]] = {}
    dis: dict[int, dict[str, Any]] = {}
    for tid, pname, pval, djson in params:
        d = dist_cache.get(djson)
        if d is None:
            d = dist_cache[djson] = json_to_distribution(djson)
        par.setdefault(tid, {})[pname] = d.to_external_repr(pval)
        dis.setdefault(tid, {})[pname] = d
    attr: dict[int, dict[str, Any]] = {}
    for tid, key, vjson in attrs:
        attr.setdefault(tid, {})[key] = json.loads(vjson)
    step_of: dict[int, int] = {int(tid): int(count) for tid, count in steps}
    tids = trials["trial_id"].tolist()
    trials["state"] = [_OPTUNA_STATES.get(str(s).upper(), "failed") for s in trials["state"]]
    trials["value"] = [value_of.get(t, math.nan) for t in tids]
    trials["params"] = [par.get(t, {}) for t in tids]
    trials["distributions"] = [dis.get(t, {}) for t in tids]
    trials["steps"] = [step_of.get(t, 0) for t in tids]
    for col in ("started_at", "ended_at"):
        trials[col] = pd.to_datetime(trials[col], utc=True, format="ISO8601")
    _energy_from_attrs(trials, [attr.get(t, {}) for t in tids])
    planned = conn.execute(
        sa.text("SELECT value_json FROM study_user_attributes WHERE study_id = :s AND key = :k"),
        {"s": sid, "k": N_TRIALS_ATTR},
    ).scalar_one_or_none()
    sweep = Sweep(
        study=name,
        trials=trials.drop(columns=["trial_id"]),
        direction=direction,
        source_kind="optuna",
        source=_redact(url),
        notes=["multi-objective study: the first objective is analysed"] if len(dirs) > 1 else [],
    )
    if planned is not None:
        sweep.cache[PLANNED_TRIALS_KEY] = json.loads(planned)
    return sweep


def _wall(trials: pd.DataFrame) -> None:
    start, end = trials["started_at"], trials["ended_at"]
    trials["wall_s"] = (end - start).dt.total_seconds()


def _energy_from_attrs(trials: pd.DataFrame, attrs: Sequence[Mapping[str, Any]]) -> None:
    """Energy and carbon from the user attributes the Optuna integration sets."""
    _wall(trials)
    kwh = np.array([_num(a.get("energy_kwh")) for a in attrs], dtype=float)
    co2 = np.array([_num(a.get("co2e_kg")) for a in attrs], dtype=float)
    # The unit helpers are plain arithmetic, so they take arrays too.
    trials["energy_j"] = kwh_to_j(kwh)  # type: ignore[arg-type]  # device energy, before PUE
    trials["co2e_g"] = kg_to_g(co2)  # type: ignore[arg-type]
    trials["energy_source"] = [a.get("energy_source") for a in attrs]


def _num(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _load_with_optuna(storage: Any, name: str | None) -> Sweep:
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
        source=storage if isinstance(storage, str) else "journal file",
        multi=len(study.directions) > 1,
    )
    if N_TRIALS_ATTR in study.user_attrs:
        sweep.cache[PLANNED_TRIALS_KEY] = study.user_attrs[N_TRIALS_ATTR]
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
    for t in frozen:
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
        trials[col] = pd.to_datetime(trials[col], utc=True)
    _energy_from_attrs(trials, attrs)
    notes = ["multi-objective study: the first objective is analysed"] if multi else []
    return Sweep(name, trials, direction, source_kind, source, notes=notes)


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
        return _load_with_optuna(storage, study)
    except HpauditInputError:
        raise
    except Exception as exc:
        raise HpauditInputError(
            f"{str(path)!r} is not a readable Optuna journal file ({type(exc).__name__}); "
            "give a journal (.log), an SQLite file or a storage URL"
        ) from None


# -- ledger ---------------------------------------------------------------------------------


def _ledger_entries(url: str, study: str | None) -> tuple[str, pd.DataFrame]:
    from hpsearch_budget.ledger import Ledger

    try:
        # create=False: reading a report must never create a ledger file for a mistyped URL.
        led = Ledger(url, create=False)
    except LedgerError as exc:
        raise _LedgerUnusable(str(exc)) from None
    try:
        names = led.studies()
        name = _pick("ledger", study, names)
        return name, led.entries(study=name)
    finally:
        led.close()


class _LedgerUnusable(HpauditInputError):
    """The ledger URL itself is bad (missing file, unreachable server, wrong scheme)."""


_COST_COLS = ["wall_s", "energy_j", "co2e_g", "usd", "gpu_s", "pue", "g_per_kwh"]


def load_ledger(
    url: str,
    *,
    study: str | None = None,
    direction: str | None = None,
    progress: Progress = _nothing,
) -> Sweep:
    """A sweep made of a ledger's rows: ``tuning`` rows are trials, ``final``/``seed`` runs."""
    progress("reading ledger")
    name, e = _ledger_entries(url, study)
    tuning = e[e["phase"] == "tuning"]
    if tuning.empty and e.empty:
        raise HpauditInputError(f"study {name!r} has no rows in the ledger; nothing to report")
    numbers = tuning["trial_number"]
    fallback = pd.Series(np.arange(len(tuning)), index=tuning.index)
    trials = pd.DataFrame(
        {
            "number": numbers.fillna(fallback).astype("int64"),
            "state": tuning["status"],
            "value": tuning["value"],
            "params": tuning["params"],
            "started_at": tuning["started_at"],
            "ended_at": tuning["ended_at"],
            "steps": (tuning["step"].astype("float64") + 1).fillna(0),
            "energy_source": tuning["source"],
            "intensity_source": tuning["intensity_source"],
            "devices": tuning["devices"],
            "host": tuning["host"],
            **{c: tuning[c] for c in _COST_COLS},
        }
    )
    notes = []
    if direction is None:
        notes.append(
            "the ledger does not record the optimisation direction: assumed "
            "'minimize' (pass --direction maximize if higher is better)"
        )
    return Sweep(
        name,
        trials,
        direction or "minimize",
        "ledger",
        _redact(url),
        runs=_runs(e),
        notes=notes,
    )


def _runs(e: pd.DataFrame) -> pd.DataFrame:
    runs = e[e["phase"].isin(["final", "seed"])]
    out = pd.DataFrame(
        {c: runs[c] for c in RUN_COLUMNS if c in runs.columns and c != "energy_source"}
    )
    out["energy_source"] = runs["source"]
    return out.reset_index(drop=True)


def _with_ledger(
    sweep: Sweep, ledger: str | None, progress: Progress, *, ray: bool = False
) -> Sweep:
    """Energy per trial from the ledger, joined on study name and trial number (Ray: trial id)."""
    if ledger is None:
        if not sweep.has_energy:
            sweep.notes.append(
                "no energy data: the trials carry no energy attributes and no ledger was given "
                "(pass --ledger URL)"
            )
        return sweep
    progress("joining ledger")
    try:
        _, e = _ledger_entries(ledger, sweep.study)
    except _LedgerUnusable:
        raise  # a --ledger the user named but that cannot be opened is an error, not a note
    except HpauditInputError as exc:
        sweep.notes.append(f"ledger not used: {exc}")
        return sweep
    tuning = e[e["phase"] == "tuning"]
    if ray:
        key = tuning["trial_key"].astype(str).str.rsplit(":", n=1).str[-1]
        ids = sweep.trials.get("trial_id", None)
        by = dict(zip(ids, sweep.trials["number"], strict=True)) if ids is not None else {}
        num = key.map(by).astype("float64")
    else:
        num = tuning["trial_number"].astype("float64")
    tuning = tuning.assign(_n=num).dropna(subset=["_n"])
    agg = tuning.groupby("_n").agg(
        energy_j=("energy_j", "sum"),
        co2e_g=("co2e_g", "sum"),
        usd=("usd", "sum"),
        gpu_s=("gpu_s", "sum"),
        pue=("pue", "mean"),
        g_per_kwh=("g_per_kwh", "mean"),
        energy_source=("source", _weakest),
        intensity_source=("intensity_source", "first"),
        devices=("devices", lambda s: sorted({d for x in s for d in (x or [])})),
        host=("host", "first"),
    )
    t = sweep.trials
    idx = t["number"].astype("float64")
    hit = idx.isin(agg.index)
    for col in agg.columns:
        mapped = idx.map(agg[col])
        # Series.where, not np.where: object columns hold lists (devices) that NumPy would
        # turn into a 2-D array.
        t[col] = mapped.where(hit, t[col]) if col in t else mapped
    for col in ("energy_j", "co2e_g", "usd", "gpu_s", "pue", "g_per_kwh"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype("float64")
    sweep.trials = t
    # Derived data is stale now; the recorded planned number of trials is not derived.
    planned = sweep.cache.get(PLANNED_TRIALS_KEY)
    sweep.cache.clear()
    if planned is not None:
        sweep.cache[PLANNED_TRIALS_KEY] = planned
    sweep.runs = _runs(e)
    if not hit.all():
        sweep.notes.append(f"{int((~hit).sum())} trial(s) have no ledger row")
    return sweep


_RANK = {"measured": 0, "integrated": 1, "replayed": 2, "estimated": 3}


def _weakest(s: pd.Series) -> str | None:
    vals = [v for v in s if isinstance(v, str) and v in _RANK]
    return max(vals, key=_RANK.__getitem__) if vals else None


# -- Ray Tune ---------------------------------------------------------------------------------

_RAY_KEYS = {
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "done",
    "trial_id",
    "date",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
    "checkpoint_dir_name",
    "should_checkpoint",
    "experiment_tag",
    "config",
    # written by hpsearch_budget.ray.metered (cumulative cost of the trial's ledger window)
    "energy_j",
    "co2e_g",
    "usd",
    "gpu_s",
    "hpaudit_window",
    "hpaudit_study",
    "energy_kwh",
    "co2e_kg",
    "energy_source",
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if isinstance(obj, dict):
            out.append(obj)
    return out


def load_ray(
    folder: Path,
    *,
    metric: str | None = None,
    direction: str | None = None,
    progress: Progress = _nothing,
) -> Sweep:
    """Read a Ray Tune experiment folder: ``params.json`` + ``result.json`` per trial folder."""
    progress("reading Ray Tune trials")
    trial_dirs = sorted(p.parent for p in folder.glob("*/result.json"))
    results = {d: _read_jsonl(d / "result.json") for d in trial_dirs}
    results = {d: r for d, r in results.items() if r}
    if not results:
        raise HpauditInputError(
            f"Ray Tune folder {str(folder)!r} has no trial results (no */result.json with "
            "data); point at the experiment folder (e.g. ~/ray_results/<name>)"
        )
    metric = metric or _guess_metric(results.values())
    if not any(metric in row for res in results.values() for row in res):
        # A mistyped --metric would otherwise give a report with no objective at all.
        reported = sorted({k for res in results.values() for k in res[-1] if k not in _RAY_KEYS})
        raise HpauditInputError(
            f"no trial in {str(folder)!r} reported metric {metric!r}; reported: "
            f"{', '.join(reported[:20]) or 'none'}"
        )
    max_iter = max(int(r[-1].get("training_iteration", len(r))) for r in results.values())
    rows = []
    attrs = []
    lasts = []
    studies: set[Any] = set()
    for d, res in sorted(results.items(), key=lambda kv: kv[1][0].get("timestamp", 0)):
        last = res[-1]
        lasts.append(last)
        params_path = d / "params.json"
        try:
            params = json.loads(params_path.read_text("utf-8")) if params_path.exists() else {}
        except json.JSONDecodeError:
            params = last.get("config", {})
        params = {
            k: v
            for k, v in (params or last.get("config", {})).items()
            if isinstance(v, bool | int | float | str)
        }
        it = int(last.get("training_iteration", len(res)))
        if (d / "error.txt").exists() or (d / "error.pkl").exists():
            state = "failed"
        elif last.get("done") or it >= max_iter:
            state = "complete"
        else:
            state = "pruned"
        start = float(res[0].get("timestamp", 0)) - float(res[0].get("time_this_iter_s", 0) or 0)
        end = float(last.get("timestamp", start))
        value = _num(last.get(metric))
        rows.append(
            {
                "trial_id": str(last.get("trial_id", d.name)),
                "state": state,
                "value": value,
                "params": params,
                "started_at": datetime.fromtimestamp(start, UTC),
                "ended_at": datetime.fromtimestamp(end, UTC),
                "steps": it,
                "host": last.get("hostname"),
            }
        )
        attrs.append(_ray_energy(last))
        studies.add(last.get("hpaudit_study"))
    trials = pd.DataFrame(rows)
    trials.insert(0, "number", np.arange(len(trials)))
    for col in ("started_at", "ended_at"):
        trials[col] = pd.to_datetime(trials[col], utc=True)
    _energy_from_attrs(trials, attrs)
    for col in ("usd", "gpu_s"):
        trials[col] = [_num(last.get(col)) for last in lasts]
    notes = [f"Ray Tune metric {metric!r}, last reported value per trial"]
    if direction is None:
        notes.append(
            "Ray Tune folders do not record the mode: assumed 'minimize' "
            "(pass --direction maximize if higher is better)"
        )
    # The ledger study of a metered Ray trial is the experiment name, which is the folder's.
    named = [s for s in studies if isinstance(s, str) and s]
    study = named[0] if len(named) == 1 else folder.name
    return Sweep(study, trials, direction or "minimize", "ray", str(folder), notes=notes)


def _ray_energy(last: Mapping[str, Any]) -> dict[str, Any]:
    """Energy keys of a result: ``energy_j`` / ``co2e_g`` (hpsearch_budget.ray.metered), else
    ``energy_kwh`` / ``co2e_kg`` (the Optuna attribute names)."""
    energy_kwh, co2e_kg = last.get("energy_kwh"), last.get("co2e_kg")
    if last.get("energy_j") is not None:
        energy_kwh = j_to_kwh(_num(last["energy_j"]))
    if last.get("co2e_g") is not None:
        co2e_kg = g_to_kg(_num(last["co2e_g"]))
    return {
        "energy_kwh": energy_kwh,
        "co2e_kg": co2e_kg,
        "energy_source": last.get("energy_source"),
    }


def _guess_metric(results: Iterable[list[dict[str, Any]]]) -> str:
    names: set[str] | None = None
    for res in results:
        numeric = {
            k
            for k, v in res[-1].items()
            if k not in _RAY_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        names = numeric if names is None else names & numeric
    candidates = sorted(names or ())
    if len(candidates) == 1:
        return candidates[0]
    raise HpauditInputError(
        f"which metric is the objective? pass --metric NAME (reported metrics: "
        f"{', '.join(candidates) or 'none'})"
    )

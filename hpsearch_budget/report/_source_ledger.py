"""A ledger as a source: its tuning rows as the trials, or joined onto an Optuna or Ray sweep.

Either way its ``final`` and ``seed`` rows become the sweep's runs, and so do its ``idle``
rows (what the meter measured between trials): in the R&D total, never a trial.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.analysis._sweep import RUN_COLUMNS, RUN_PHASES
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.report._attempts import fold_attempts, retried_numbers, weakest
from hpsearch_budget.report._earlier_studies import drop_earlier_studies
from hpsearch_budget.report._forecast import PLANNED_TRIALS_KEY
from hpsearch_budget.report._source_common import (
    Progress,
    _nothing,
    _pick,
    _redact,
    require_direction,
)
from hpsearch_budget.report._source_ray import note_ray_fates
from hpsearch_budget.units import j_to_kwh


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
    """A sweep made of a ledger's rows: ``tuning`` rows are trials; ``final``, ``seed`` and
    ``idle`` rows runs."""
    progress("reading ledger")
    name, e = _ledger_entries(url, study)
    tuning = e[e["phase"] == "tuning"]
    if tuning.empty and e.empty:
        raise HpauditInputError(f"study {name!r} has no rows in the ledger; nothing to report")
    trials = _ledger_trials(tuning)
    return Sweep(
        name,
        trials,
        require_direction(direction, trials, "the ledger"),
        "ledger",
        _redact(url),
        runs=_runs(e),
    )


def _ledger_trials(tuning: pd.DataFrame) -> pd.DataFrame:
    """The tuning rows as trial columns; a row without a trial number is numbered by position.

    The windows of one trial (one ``trial_key``: a Ray trial retried after a failure, or
    restarted by ``Tuner.restore``) are one trial: costs summed, the fate and value its last
    window's."""
    numbers = tuning["trial_number"]
    fallback = pd.Series(np.arange(len(tuning)), index=tuning.index)
    rows = pd.DataFrame(
        {
            "trial_key": tuning["trial_key"],
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
    return fold_attempts(rows, "trial_key")


def _runs(e: pd.DataFrame) -> pd.DataFrame:
    runs = e[e["phase"].isin(RUN_PHASES)]
    out = pd.DataFrame(
        {c: runs[c] for c in RUN_COLUMNS if c in runs.columns and c != "energy_source"}
    )
    out["energy_source"] = runs["source"]
    return out.reset_index(drop=True)


def _with_ledger(
    sweep: Sweep,
    ledger: str | None,
    progress: Progress,
    *,
    ray: bool = False,
    named: bool = False,
    study: str | None = None,
) -> Sweep:
    """Energy per trial from the ledger, joined on study name and trial number (Ray: trial id).

    ``named``: the user named this ledger (``--ledger``), so one without the study is an
    error; a ledger found in the study's own database may hold other studies only (a note).
    ``study``: the study's name in the ledger, when not the sweep's own (a renamed copy).
    """
    if ledger is None:
        if ray:
            note_ray_fates(sweep)
        if not sweep.has_energy:
            sweep.notes.append(
                "no energy data: the trials carry no energy attributes and no ledger was given "
                "(pass --ledger URL)"
            )
        return sweep
    progress("joining ledger")
    try:
        _, e = _ledger_entries(ledger, study or sweep.study)
    except _LedgerUnusable:
        raise  # a --ledger the user named but that cannot be opened is an error, not a note
    except HpauditInputError as exc:
        if named:
            raise HpauditInputError(f"--ledger: {exc}") from None
        sweep.notes.append(f"ledger not used: {exc}")
        return sweep
    return _join_entries(sweep, e, ray=ray)


def _join_entries(sweep: Sweep, e: pd.DataFrame, *, ray: bool = False) -> Sweep:
    """Join the ledger rows ``e`` of the sweep's study onto its trials (:func:`_with_ledger`)."""
    tuning, runs = e[e["phase"] == "tuning"], e[e["phase"].isin(RUN_PHASES)]
    if not ray:  # Ray windows are matched by trial id, unique per experiment
        tuning, runs, earlier = drop_earlier_studies(tuning, runs, sweep.study)
        if earlier is not None:
            sweep.notes.append(earlier)
    # An Optuna heartbeat retry's row counts for the first attempt, into which it is folded.
    retried = retried_numbers(sweep.cache)
    tuning = tuning.assign(_n=_trial_numbers(tuning, sweep.trials, ray).replace(retried))
    _note_unmatched(sweep, tuning[tuning["_n"].isna()])
    tuning = tuning.dropna(subset=["_n"])
    agg = _per_trial(tuning)
    fates = agg.pop("status")
    hit = _join_per_trial(sweep.trials, agg)
    _states_from_ledger(sweep.trials, fates, ray)
    _clear_derived(sweep)
    sweep.runs = _runs(runs)
    if not hit.all():
        sweep.notes.append(f"{int((~hit).sum())} trial(s) have no ledger row")
    return sweep


def _states_from_ledger(trials: pd.DataFrame, fates: pd.Series, ray: bool) -> None:
    """Trial fates the ledger knows better, in place. A Ray folder calls every trial that
    went as far as the longest one complete, although a budget may have stopped it (the ledger
    says pruned), and every shorter one pruned, although it may have stopped by itself;
    an Optuna trial whose worker was killed stays RUNNING in Optuna's storage for ever (the
    ledger says killed). ``fates``: the ledger status per trial number."""
    ledger_state = trials["number"].astype("float64").map(fates)
    known = ledger_state.notna() & (ledger_state != "running")
    take = known if ray else known & (trials["state"] == "running")
    trials.loc[take, "state"] = ledger_state[take]


def _note_unmatched(sweep: Sweep, rows: pd.DataFrame) -> None:
    """Say so when ledger rows of the study match no trial of the source: their cost is not in
    the report's figures (e.g. a Ray trial that wrote no result before it ended)."""
    if rows.empty:
        return
    kwh = j_to_kwh(float(rows["energy_j"].sum()))
    sweep.notes.append(
        f"{len(rows)} ledger row(s) of study {sweep.study!r} match no trial of the source "
        f"(no result recorded): their {kwh:.3g} kWh are not in the figures; report from the "
        "ledger URL to count them"
    )


def _trial_numbers(tuning: pd.DataFrame, trials: pd.DataFrame, ray: bool) -> pd.Series:
    """The sweep's trial number of each tuning row (NaN: none), as float."""
    if not ray:
        return tuning["trial_number"].astype("float64")
    # Ray windows are keyed "<study>:<trial_id>" (hpsearch_budget.ray.metered).
    key = tuning["trial_key"].astype(str).str.rsplit(":", n=1).str[-1]
    ids = trials.get("trial_id", None)
    by = dict(zip(ids, trials["number"], strict=True)) if ids is not None else {}
    return key.map(by).astype("float64")


def _per_trial(tuning: pd.DataFrame) -> pd.DataFrame:
    """The tuning rows summed (costs) or summarised (the rest) per trial number ``_n``."""
    return tuning.groupby("_n").agg(
        energy_j=("energy_j", "sum"),
        co2e_g=("co2e_g", "sum"),
        usd=("usd", "sum"),
        gpu_s=("gpu_s", "sum"),
        pue=("pue", "mean"),
        g_per_kwh=("g_per_kwh", "mean"),
        energy_source=("source", weakest),
        intensity_source=("intensity_source", "first"),
        devices=("devices", lambda s: sorted({d for x in s for d in (x or [])})),
        host=("host", "first"),
        status=("status", "last"),  # a restored Ray trial: its last window's fate
    )


def _join_per_trial(t: pd.DataFrame, agg: pd.DataFrame) -> pd.Series:
    """Put ``agg``'s columns into the trials ``t`` (in place) where a trial has ledger rows;
    the others keep what they had. Returns which trials had rows."""
    idx = t["number"].astype("float64")
    hit = idx.isin(agg.index)
    for col in agg.columns:
        mapped = idx.map(agg[col])
        # Series.where, not np.where: object columns hold lists (devices) that NumPy would
        # turn into a 2-D array.
        t[col] = mapped.where(hit, t[col]) if col in t else mapped
    for col in ("energy_j", "co2e_g", "usd", "gpu_s", "pue", "g_per_kwh"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype("float64")
    return hit


def _clear_derived(sweep: Sweep) -> None:
    """Empty ``sweep.cache``: its derived data is stale once the ledger's costs are joined."""
    # The recorded planned number of trials is not derived: keep it.
    planned = sweep.cache.get(PLANNED_TRIALS_KEY)
    sweep.cache.clear()
    if planned is not None:
        sweep.cache[PLANNED_TRIALS_KEY] = planned

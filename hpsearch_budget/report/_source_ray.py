"""A Ray Tune experiment folder as a source: each trial folder's ``params.json`` and
``result.json`` (JSON lines). Pickles (``*.pkl``) are never opened.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._shareable import STUDY_ATTR
from hpsearch_budget.report._attempts import weakest
from hpsearch_budget.report._source_common import (
    RECORDED_LEDGER_KEY,
    Progress,
    _energy_from_attrs,
    _nothing,
    _num,
    require_direction,
)
from hpsearch_budget.units import g_to_kg, j_to_kwh

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
    STUDY_ATTR,  # the ledger's URL, in the first result of each window
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
    results = _ray_results(folder)
    metric = metric or _guess_metric(results.values())
    _check_metric(folder, results, metric)
    max_iter = max(int(r[-1].get("training_iteration", len(r))) for r in results.values())
    # Trials are numbered in the order they started.
    ordered = sorted(results.items(), key=lambda kv: kv[1][0].get("timestamp", 0))
    lasts = [res[-1] for _, res in ordered]
    statuses = _tune_statuses(folder)
    trials = pd.DataFrame(
        [_ray_row(d, res, metric, max_iter, statuses.get(d.name)) for d, res in ordered]
    )
    trials.insert(0, "number", np.arange(len(trials)))
    for col in ("started_at", "ended_at"):
        trials[col] = pd.to_datetime(trials[col], utc=True)
    costs = [_window_costs(res) for _, res in ordered]
    _energy_from_attrs(trials, [_ray_energy(cost) for cost in costs])
    for col in ("usd", "gpu_s"):
        trials[col] = [_num(cost.get(col)) for cost in costs]
    notes = [f"Ray Tune metric {metric!r}, last reported value per trial"]
    direction = require_direction(direction, trials, "a Ray Tune folder", f"metric {metric!r}")
    study = _ray_study(lasts, folder)
    sweep = Sweep(study, trials, direction, "ray", str(folder), notes=notes)
    _keep_recorded_ledger(sweep, [res for _, res in ordered])
    return sweep


def _keep_recorded_ledger(sweep: Sweep, results: Iterable[list[dict[str, Any]]]) -> None:
    """Leave the ledger URL the trials recorded (``hpaudit_ledger``, in the first result of
    each ledger window) for ``join_ledger``; trials naming several ledgers leave it to
    ``--ledger``, with a note."""
    urls = {r[STUDY_ATTR] for res in results for r in res if isinstance(r.get(STUDY_ATTR), str)}
    if len(urls) == 1:
        sweep.cache[RECORDED_LEDGER_KEY] = urls.pop()
    elif urls:
        sweep.notes.append(
            f"ledger not used: the trials' results name {len(urls)} ledgers in their "
            f"{STUDY_ATTR} key ({', '.join(sorted(urls))}); pass --ledger URL"
        )


def _ray_results(folder: Path) -> dict[Path, list[dict[str, Any]]]:
    """Each trial folder's results, in order; trials that never reported are left out."""
    trial_dirs = sorted(p.parent for p in folder.glob("*/result.json"))
    results = {d: _read_jsonl(d / "result.json") for d in trial_dirs}
    results = {d: r for d, r in results.items() if r}
    if not results:
        raise HpauditInputError(
            f"Ray Tune folder {str(folder)!r} has no trial results (no */result.json with "
            "data); point at the experiment folder (e.g. ~/ray_results/<name>)"
        )
    return results


def _check_metric(folder: Path, results: Mapping[Path, list[dict[str, Any]]], metric: str) -> None:
    """Raise when no trial reported ``metric``, naming the metrics they did report."""
    if not any(metric in row for res in results.values() for row in res):
        # A mistyped --metric would otherwise give a report with no objective at all.
        reported = sorted({k for res in results.values() for k in res[-1] if k not in _RAY_KEYS})
        raise HpauditInputError(
            f"no trial in {str(folder)!r} reported metric {metric!r}; reported: "
            f"{', '.join(reported[:20]) or 'none'}"
        )


def _tune_statuses(folder: Path) -> dict[str, str]:
    """Trial folder name -> the status Tune saved last (``TERMINATED``, ``ERROR``...), read
    from the newest ``experiment_state-*.json`` (plain JSON); empty where it cannot be read."""
    states = list(folder.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(max(states, key=lambda p: p.stat().st_mtime).read_text("utf-8"))
        trials = [json.loads(item[0]) for item in data["trial_data"]]
        return {str(t["relative_logdir"]): str(t["status"]) for t in trials}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}  # another Ray version's layout: the trial folders alone decide


def _ray_row(
    d: Path, res: list[dict[str, Any]], metric: str, max_iter: int, status: str | None
) -> dict[str, Any]:
    """One trial's row, from its folder and its results (the last one is its outcome)."""
    last = res[-1]
    it = int(last.get("training_iteration", len(res)))
    # A result is stamped when its iteration ends: the trial began one iteration earlier.
    start = float(res[0].get("timestamp", 0)) - float(res[0].get("time_this_iter_s", 0) or 0)
    end = float(last.get("timestamp", start))
    return {
        "trial_id": str(last.get("trial_id", d.name)),
        "state": _ray_state(d, it, max_iter, status),
        "value": _num(last.get(metric)),
        "params": _ray_params(d, last),
        "started_at": datetime.fromtimestamp(start, UTC),
        "ended_at": datetime.fromtimestamp(end, UTC),
        "steps": it,
        "host": last.get("hostname"),
    }


def _ray_params(d: Path, last: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's scalar hyperparameters: its ``params.json``, else the config it reported."""
    params_path = d / "params.json"
    try:
        params = json.loads(params_path.read_text("utf-8")) if params_path.exists() else {}
    except json.JSONDecodeError:
        params = last.get("config", {})
    return {
        k: v
        for k, v in (params or last.get("config", {})).items()
        if isinstance(v, bool | int | float | str)
    }


def _ray_state(d: Path, it: int, max_iter: int, status: str | None) -> str:
    """failed (an error file), complete (as far as the longest trial), else pruned."""
    errored = (d / "error.txt").exists() or (d / "error.pkl").exists()
    # A trial retried after an error (FailureConfig) keeps its error file: Tune's own status
    # says whether its last attempt ended it.
    if status == "ERROR" or (errored and status != "TERMINATED"):
        return "failed"
    # Not ``done``: Tune marks the last result of a trial it stopped (scheduler, stopper)
    # ``done`` too, so every trial ASHA cut short would count as complete.
    return "complete" if it >= max_iter else "pruned"


def note_ray_fates(sweep: Sweep) -> None:
    """Say how the fates were read when no ledger tells them (:func:`_ray_state`)."""
    short = sweep.trials["state"].eq("pruned")
    if short.any():
        sweep.notes.append(
            f"{int(short.sum())} trial(s) ended before the longest trial's "
            f"{int(sweep.trials['steps'].max())} iterations and count as stopped by Tune "
            "(pruned): a Ray Tune folder does not record whether a trial stopped by itself; "
            "pass --ledger URL for the fates the ledger recorded"
        )


def _window_costs(res: list[dict[str, Any]]) -> dict[str, Any]:
    """A trial's cost from its results: the last result's figures, summed over its ledger
    windows. metered() figures are cumulative within a window, and a trial retried, restored
    or exploited by PBT opens a new window (``hpaudit_window``) at each restart."""
    per_window = {r.get("hpaudit_window"): r for r in res}  # the last result of each
    if len(per_window) == 1:
        return res[-1]
    out = dict(res[-1])
    for key in ("energy_j", "co2e_g", "usd", "gpu_s", "energy_kwh", "co2e_kg"):
        values = [r[key] for r in per_window.values() if r.get(key) is not None]
        out[key] = sum(_num(v) for v in values) if values else None
    out["energy_source"] = weakest(pd.Series([r.get("energy_source") for r in per_window.values()]))
    return out


def _ray_study(lasts: Iterable[Mapping[str, Any]], folder: Path) -> str:
    """The sweep's study name: the ledger study the trials were metered under, else the folder's."""
    # The ledger study of a metered Ray trial is the experiment name, which is the folder's.
    studies: set[Any] = {last.get("hpaudit_study") for last in lasts}
    named = [s for s in studies if isinstance(s, str) and s]
    return named[0] if len(named) == 1 else folder.name


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

"""The report's forecast: cost to finish the sweep and of its final training, with an interval.

A thin adapter from a :class:`~hpsearch_budget.analysis.Sweep` to
:func:`hpsearch_budget.budget.forecast_sweep`, so Optuna, Ray and ledger sources share it.
Finished trials without energy data are left out of the sample *and* of the planned total
(they would otherwise be charged again as "remaining"). With a
:class:`~hpsearch_budget.budget.TrialCostModel` of earlier sweeps (``hpaudit report
--cost-history``), a sweep whose finished trials all trained to the end is forecast from it,
its search space drawn from the trials' Optuna distributions where the source has them.
Without one, such a sweep with a known search space is forecast from a model of its own
trials once it has a few more of them than parameters
(:meth:`~hpsearch_budget.budget.TrialCostModel.from_sweep`). A sweep whose later trials cost
differently from its first ones (TPE after its random startup, or a pruner that learned;
:func:`~hpsearch_budget.budget.cost_shifted`) is forecast from its later half instead, with no
model: a model's average over the search space assumes random search.

Example:

    >>> from hpsearch_budget.analysis import Sweep
    >>> sw = Sweep.from_records("demo", [
    ...     {"number": i, "state": "complete", "value": 0.1 * i, "energy_j": 3.6e6,
    ...      "co2e_g": 400.0} for i in range(4)])
    >>> f = forecast_section(sw, n_trials=10, final_epochs=2.0, seeds=3)
    >>> f.n_remaining, f.sweep_total.estimate.energy_kwh, f.final.estimate.co2e_kg
    (6, 10.0, 0.8)
    >>> f.seeds.estimate.energy_kwh  # 3 reruns of the final training
    6.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.budget import (
    Cost,
    SweepForecast,
    TrialCostModel,
    cost_shifted,
    forecast_sweep,
)
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.report import _model as m
from hpsearch_budget.units import g_to_kg, j_to_kwh

#: Study user attribute read as the planned number of trials (Optuna does not record it).
N_TRIALS_ATTR = "n_trials"
#: Key of ``Sweep.cache`` where a source puts that recorded value.
PLANNED_TRIALS_KEY = "planned_n_trials"


def _costs(frame: object) -> list[Cost]:
    def col(name: str) -> np.ndarray:
        v = frame[name].to_numpy(float)  # type: ignore[index]
        return np.where(np.isfinite(v), v, 0.0)

    cols = [col(c) for c in ("energy_j", "co2e_g", "usd", "gpu_s")]
    return [Cost(*(float(x) for x in row)) for row in zip(*cols, strict=True)]


def _money(c: Cost, have: dict[str, bool]) -> m.ForecastCost:
    def f(x: float, key: str) -> float | None:
        return float(x) if have[key] and math.isfinite(x) else None

    return m.ForecastCost(
        energy_kwh=f(j_to_kwh(c.energy_j), "energy_j"),
        co2e_kg=f(g_to_kg(c.co2e_g), "co2e_g"),
        usd=f(c.usd, "usd"),
        gpu_hours=f(c.gpu_s / 3600.0, "gpu_s"),
    )


def _range(runs: float, est: Cost, low: Cost, high: Cost, have: dict[str, bool]) -> m.ForecastRange:
    return m.ForecastRange(
        runs=runs, estimate=_money(est, have), low=_money(low, have), high=_money(high, have)
    )


def _scaled(costs: tuple[Cost, Cost, Cost], k: float) -> tuple[Cost, Cost, Cost]:
    est, low, high = costs
    return est.scale(k), low.scale(k), high.scale(k)


def _model_inputs(
    finished: pd.DataFrame, model: TrialCostModel | None, notes: list[str], shifted: bool
) -> dict[str, Any]:
    """``forecast_sweep``'s cost-model arguments for these finished trials, or {} (the mean of
    the finished trials is used then).

    With ``model`` (earlier sweeps, ``--cost-history``), a note says why when it does not apply:
    it knows full trainings of trials with params. Without one, a sweep whose trials all
    trained to the end and whose search space is known gets a model of its own trials
    (:meth:`TrialCostModel.from_sweep`) once it has enough of them.
    """
    states = finished["state"]
    energy = finished["energy_j"].to_numpy(float)
    full = bool((states == "complete").all() and (energy > 0).all())
    _note_history_unused(model, full, shifted, notes)
    if not full or shifted:  # a model of the search space says nothing of where TPE went
        return {}
    params = [p if isinstance(p, dict) else {} for p in finished["params"]]
    space = _search_space(finished)
    if model is None:
        model = _own_sweep_model(params, energy, space)
        if model is None:
            return {}
    from hpsearch_budget.optuna import draw_params

    draws = draw_params(space, n=2000, seed=0) if space else None
    notes.append(_model_note(model))
    return {"cost_model": model, "params": params, "space": draws}


def _note_history_unused(
    model: TrialCostModel | None, full: bool, shifted: bool, notes: list[str]
) -> None:
    """Say why a given cost history is left out: it knows full trainings under random search."""
    if model is not None and not full:
        notes.append(
            "cost history not used: it forecasts sweeps whose trials all train to the end, "
            "with energy recorded; this one has pruned, failed or unmetered trials"
        )
    elif model is not None and shifted:
        notes.append(
            "cost history not used: it averages over the search space as random search draws "
            "it, and this sweep's later trials cost differently from its first ones"
        )


def _search_space(finished: pd.DataFrame) -> dict[str, Any]:
    """The Optuna distributions of every parameter the finished trials drew ({}: unknown)."""
    space: dict[str, Any] = {}
    for d in finished["distributions"]:
        space.update(d if isinstance(d, dict) else {})
    return space


def _own_sweep_model(
    params: list[dict[str, Any]], energy: np.ndarray, space: dict[str, Any]
) -> TrialCostModel | None:
    """A cost model of the sweep's own trials, or None where their mean does as well."""
    if not space:  # averaging over the trials that ran is no better than their mean
        return None
    try:
        return TrialCostModel.from_sweep(list(zip(params, energy, strict=True)))
    except HpauditInputError:  # too few trials yet: their mean
        return None


def _model_note(model: TrialCostModel) -> str:
    """The note saying which cost model forecasts the trials left, and what it assumes."""
    if model.own_sweep:
        return (
            f"cost to finish from a model of this sweep's {model.n_trials} complete trials "
            "(cost vs parameters), averaged over its search space: it assumes the trials left "
            "are drawn like random search (estimate)"
        )
    return (
        f"cost to finish from a cost model of {model.n_studies} earlier sweeps "
        f"({model.n_trials} complete trials) over the same parameters; this sweep's trials "
        "set its scale (estimate)"
    )


def forecast_section(
    sweep: Sweep,
    *,
    n_trials: int | None = None,
    n_trials_source: str = "--n-trials",
    final_epochs: float = 1.0,
    seeds: int = 0,
    level: float = 0.9,
    cost_model: TrialCostModel | None = None,
) -> m.ForecastSection | None:
    """Forecast of ``sweep`` (None when no finished trial has energy data).

    ``n_trials``: the sweep's planned number of trials (None: unknown, only the final training
    is forecast). Fewer than the trials already run raises :class:`HpauditInputError` when it
    came from the user (``n_trials_source == "--n-trials"``); a stale recorded value is a note.
    ``cost_model``: forecast the trials left from it (see the module docstring).
    """
    t = sweep.trials.sort_values("number", kind="stable")  # the shift check reads the order
    running = t[t["state"] == "running"]
    finished = t[t["state"] != "running"]
    with_energy = finished[np.isfinite(finished["energy_j"].to_numpy(float))]
    if with_energy.empty:
        return None
    have = _recorded_units(t)
    notes: list[str] = []
    n_missing = len(finished) - len(with_energy)
    if n_missing:
        notes.append(
            f"{n_missing} finished trials without energy data are left out of the forecast"
        )
    planned = _planned(n_trials, len(t), n_trials_source, notes)
    complete = with_energy[with_energy["state"] == "complete"]
    shifted = _shifted(with_energy, planned, notes)
    modelled = _model_inputs(with_energy, cost_model, notes, shifted) if planned is not None else {}
    f: SweepForecast = forecast_sweep(
        _costs(with_energy),
        _n_total(planned, n_missing, len(with_energy), len(running)),
        running=_costs(running),
        complete=_costs(complete) if len(complete) else None,
        n_final_runs=1,
        level=level,
        **modelled,
    )
    if planned is None:
        notes.append(
            "planned number of trials unknown: pass --n-trials N (or record it with "
            f"study.set_user_attr({N_TRIALS_ATTR!r}, N)) to forecast the cost to finish"
        )
    if complete.empty:
        notes.append("no complete trial: the final training is forecast from all finished trials")
    if len(sweep.runs) and (sweep.runs["phase"] == "idle").any():
        notes.append(
            "spent so far and the cost to finish count the trials only: the idle between "
            "trials the ledger recorded is in the R&D cost"
        )
    to_finish, total = _sweep_ranges(f, planned, have)
    n_final = len(complete) if len(complete) else len(with_energy)
    final, seed_runs = _final_ranges(f, sweep, final_epochs, seeds, have, notes, n_final)
    return m.ForecastSection(
        method=f"{f.method}; final training: median complete trial x {final_epochs:g}",
        level=level,
        n_trials_planned=planned,
        n_trials_planned_source=n_trials_source if planned is not None else "",
        n_finished=f.n_done,
        n_running=f.n_running,
        n_remaining=f.n_remaining if planned is not None else None,
        spent=_money(f.spent, have),
        to_finish=to_finish,
        sweep_total=total,
        final=final,
        seeds=seed_runs,
        notes=notes,
    )


def _recorded_units(trials: pd.DataFrame) -> dict[str, bool]:
    """Which cost columns some trial recorded."""
    # A unit is shown only where some trial recorded it: never a silent zero.
    return {
        c: bool(np.isfinite(trials[c].to_numpy(float)).any())
        for c in ("energy_j", "co2e_g", "usd", "gpu_s")
    }


def _planned(n_trials: int | None, n_run: int, source: str, notes: list[str]) -> int | None:
    """The planned number of trials, or None when unknown or fewer than the ``n_run`` so far."""
    if n_trials is not None and n_trials < n_run:
        msg = f"n_trials={n_trials} is fewer than the {n_run} trials already run"
        if source == "--n-trials":
            raise HpauditInputError(f"{msg}; pass the sweep's planned total with --n-trials")
        notes.append(f"recorded {msg} ({source}); cost to finish not forecast")
        return None
    return n_trials


def _shifted(with_energy: pd.DataFrame, planned: int | None, notes: list[str]) -> bool:
    """Whether the later finished trials cost differently from the first ones (noted if so)."""
    # Only the cost to finish depends on it (forecast_sweep runs the same check on the same
    # trials); the report must know first, to leave a cost model out.
    shifted = (
        planned is not None and cost_shifted(with_energy["energy_j"].to_numpy(float)) is not None
    )
    if shifted:
        notes.append(
            "the later half of the finished trials cost differently from the first half (an "
            "adaptive sampler such as TPE, or pruning that learned): the cost to finish is "
            "forecast from the later half (estimate)"
        )
    return shifted


def _n_total(planned: int | None, n_missing: int, n_with_energy: int, n_running: int) -> int:
    """The trials ``forecast_sweep`` forecasts in all."""
    # Trials without energy data are out of the sample, so out of the plan too: they would be
    # charged again as remaining. With no plan, only the trials already started are counted.
    if planned is not None:
        return planned - n_missing
    return n_with_energy + n_running


def _sweep_ranges(
    f: SweepForecast, planned: int | None, have: dict[str, bool]
) -> tuple[m.ForecastRange | None, m.ForecastRange | None]:
    """Cost to finish the sweep and of the whole sweep; (None, None) when the plan is unknown."""
    if planned is None:
        return None, None
    to_finish = _range(
        f.n_remaining + f.n_running, f.remaining, f.low - f.spent, f.high - f.spent, have
    )
    return to_finish, _range(planned, f.total, f.low, f.high, have)


def _final_ranges(
    f: SweepForecast,
    sweep: Sweep,
    final_epochs: float,
    seeds: int,
    have: dict[str, bool],
    notes: list[str],
    n_sample: int,
) -> tuple[m.ForecastRange | None, m.ForecastRange | None]:
    """The final training and its seed reruns, each unless the ledger already recorded it.

    ``n_sample``: the trials whose median is the final training. Fewer than
    :func:`_min_trials_for_interval` give no interval (low and high null, and a note)."""
    if f.final is None or f.final_low is None or f.final_high is None:
        return None, None
    recorded = set(sweep.runs["phase"]) if len(sweep.runs) else set()
    per_run = (f.final, f.final_low, f.final_high)
    final = seed_runs = None
    if "final" in recorded:
        notes.append("final training recorded in the ledger: see the R&D cost, not forecast")
    else:
        final = _range(final_epochs, *_scaled(per_run, final_epochs), have)
    if "seed" in recorded:
        notes.append("seed reruns recorded in the ledger: see the R&D cost, not forecast")
    elif seeds > 0:
        k = final_epochs * seeds
        seed_runs = _range(seeds, *_scaled(per_run, k), have)
    need = _min_trials_for_interval(f.level)
    if n_sample < need and (final is not None or seed_runs is not None):
        final, seed_runs = _without_interval(final), _without_interval(seed_runs)
        cover = 1 - 2 * 0.5**n_sample
        notes.append(
            f"final training: no {f.level:.0%} interval from {n_sample} trial(s): even "
            f"their full range holds the median trial's cost with only {cover:.0%} chance "
            f"({need} trials are needed)"
        )
    return final, seed_runs


def _without_interval(r: m.ForecastRange | None) -> m.ForecastRange | None:
    """``r`` with its low and high unknown (null in every unit)."""
    if r is None:
        return None
    unknown = _money(Cost(), dict.fromkeys(("energy_j", "co2e_g", "usd", "gpu_s"), False))
    return r.model_copy(update={"low": unknown, "high": unknown})


def _min_trials_for_interval(level: float) -> int:
    """The fewest trials whose range (lowest to highest) is a ``level`` interval of their
    median, whatever their distribution: 1 - 2 x 0.5^n >= level (5 at 90%)."""
    return max(1, math.ceil(1 - math.log2(1 - level)))

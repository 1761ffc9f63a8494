"""Assemble a :class:`Report` from a :class:`Sweep`: run every analysis once, keep the numbers.

Renderers (text, Markdown, HTML, JSON) only format this model, so every format shows the same
figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from hpsearch_budget.analysis import (
    Assumptions,
    CarbonAfterBest,
    EvpPoint,
    Importance,
    PhaseCost,
    RndCost,
    SeedVariance,
    Sweep,
    WhatIf,
    carbon_after_best,
    checklist,
    evp_curve,
    importances,
    rnd_cost,
    seed_variance,
    top_k_spread,
)
from hpsearch_budget.analysis._sweep import cumulative_co2e_g
from hpsearch_budget.analysis._variance import Spread
from hpsearch_budget.budget import TrialCostModel
from hpsearch_budget.carbon import Intensity
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.policy import Policy, load_policy
from hpsearch_budget.report import _model as m
from hpsearch_budget.report._forecast import N_TRIALS_ATTR, PLANNED_TRIALS_KEY, forecast_section
from hpsearch_budget.report._policy_check import policy_check
from hpsearch_budget.units import g_to_kg, g_to_lbs, j_to_kwh

Progress = Callable[[str], None]


def _f(x: float | None) -> float | None:
    """A finite float or None (JSON null)."""
    return float(x) if x is not None and math.isfinite(x) else None


def default_assumptions(sweep: Sweep, **overrides: object) -> Assumptions:
    """Assumptions for gaps in the data: the sweep's own recorded intensity where it has one."""
    from hpsearch_budget.carbon import default_electricity_price, default_intensity

    t = sweep.trials
    g, e = t["g_per_kwh"].to_numpy(float), t["energy_j"].to_numpy(float)
    ok = np.isfinite(g) & np.isfinite(e) & (e > 0)
    if ok.any():
        src = next((s for s in t.loc[ok, "intensity_source"] if isinstance(s, str)), "ledger")
        intensity = Intensity(float(np.average(g[ok], weights=e[ok])), f"as recorded: {src}")
    else:
        intensity = default_intensity()
    price = default_electricity_price()
    base = Assumptions(
        intensity=intensity, usd_per_kwh=price.usd_per_kwh, usd_per_kwh_source=price.label
    )
    pue = t["pue"].to_numpy(float)
    recorded = ok & np.isfinite(pue)
    if recorded.any():  # projections use the PUE the sweep's own rows were charged with
        average = float(np.average(pue[recorded], weights=e[recorded]))
        base = replace(base, pue=average, pue_source="as recorded")
    base = replace(base, **overrides)  # type: ignore[arg-type]
    if not ok.any() and "intensity" not in overrides:
        base = _derived_intensity(t, base)
    return base


def _derived_intensity(t: pd.DataFrame, a: Assumptions) -> Assumptions:
    """An Optuna study read without its ledger records each trial's CO2e and device energy but
    not the intensity and PUE behind them; the world average would state a rate the sweep was
    not charged at (475 g/kWh for a sweep charged in France at 56). The intensity is taken as
    the study's CO2e per device kWh over the PUE assumed (labelled so): anything charged at
    the assumptions costs what the sweep's own kWh cost."""
    co2, e = t["co2e_g"].to_numpy(float), t["energy_j"].to_numpy(float)
    both = np.isfinite(co2) & np.isfinite(e) & (e > 0)
    if not both.any() or co2[both].sum() <= 0:
        return a
    per_device_kwh = float(co2[both].sum()) / j_to_kwh(float(e[both].sum()))
    label = f"derived: the study's CO2e per kWh at PUE {a.pue:g}; not recorded in the study"
    return replace(a, intensity=Intensity(per_device_kwh / a.pue, label))


def _phase(p: PhaseCost) -> m.PhaseRow:
    def share(x: float) -> float | None:
        return _f(x / p.energy_j) if p.energy_j and math.isfinite(p.energy_j) else None

    return m.PhaseRow(
        phase=p.phase,  # type: ignore[arg-type]
        runs=p.runs,
        basis=p.basis,
        hours=_f(p.hours),
        gpu_hours=_f(p.gpu_hours),
        energy_kwh=_f(j_to_kwh(p.energy_j)),
        energy_kwh_pue=_f(p.energy_kwh_pue),
        co2e_kg=_f(p.co2e_kg),
        co2e_lbs=_f(p.co2e_lbs),
        electricity_usd=_f(p.electricity_usd),
        cloud_usd_low=_f(p.cloud_usd[0]) if p.cloud_usd else None,
        cloud_usd_high=_f(p.cloud_usd[1]) if p.cloud_usd else None,
        measured_share=share(p.measured_j),
        estimated_share=share(p.estimated_j),
        projected_share=share(p.projected_j),
        runs_without_energy=p.runs_without_energy,
    )


def _spread(s: Spread | None) -> m.SpreadInfo | None:
    if s is None:
        return None
    return m.SpreadInfo(n=s.n, mean=_f(s.mean), std=_f(s.std), min=_f(s.min), max=_f(s.max))


def build_report(
    sweep: Sweep,
    *,
    assumptions: Assumptions | None = None,
    what_if_intensity: Intensity | None = None,
    what_if_pue: float | None = None,
    more_trials: int | None = None,
    evaluator: str = "ped-anova",
    top_k: int = 10,
    tolerance: float = 0.005,
    n_trials: int | None = None,
    level: float = 0.9,
    cost_model: TrialCostModel | None = None,
    policy: Policy | str | os.PathLike[str] | None = None,
    progress: Progress = lambda _: None,
) -> m.Report:
    """Every analysis of ``sweep``, as a :class:`Report` (raises when nothing can be reported).

    ``n_trials``: the sweep's planned number of trials, for the forecast of the cost to finish
    it (None: the study's recorded ``n_trials`` user attribute, if any); ``level``: coverage of
    the forecast's interval; ``cost_model``: a model of trial cost learned from earlier
    sweeps (:meth:`TrialCostModel.from_ledger`) for the forecast of the cost to finish;
    ``policy``: a lab policy (a :class:`Policy` or its file) whose ``[reporting]``
    requirements the report checks (None: none checked; unlike a sweep, a report does not
    look for ``hpaudit.toml`` itself: ``hpaudit report`` does, as sweeps do).
    """
    from hpsearch_budget import __version__

    # Read first: a malformed policy file fails before the (long) analyses.
    lab = None if policy is None else load_policy(policy)
    if sweep.trials.empty:
        raise HpauditInputError(
            f"study {sweep.study!r} has no trials; run the sweep first (nothing to report)"
        )
    a = assumptions or default_assumptions(sweep)
    progress("forecast")
    fc = _forecast(sweep, a, n_trials, level, cost_model)
    progress("R&D cost")
    rnd = rnd_cost(
        sweep,
        a,
        what_if_intensity=what_if_intensity,
        what_if_pue=what_if_pue,
        more_trials=more_trials,
    )
    sens = _importances(sweep, evaluator, progress)
    progress("variance")
    seed = seed_variance(sweep)
    variance = _variance_section(sweep, seed, top_k, tolerance)
    hardware = _hardware(sweep)
    return m.Report(
        generated_at=datetime.now(UTC),
        tool_version=__version__,
        study=_study_info(sweep, hardware),
        rnd=_rnd_section(rnd, a),
        sensitivity=[_importance_section(i) for i in sens],
        variance=variance,
        checklist=_checklist(sweep, hardware, sens, seed, rnd),
        trials=_points(sweep),
        notes=_notes(sweep, rnd, fc),
        forecast=fc,
        policy=None if lab is None else policy_check(lab, seed, sens),
    )


def _forecast(
    sweep: Sweep,
    a: Assumptions,
    n_trials: int | None,
    level: float,
    cost_model: TrialCostModel | None,
) -> m.ForecastSection | None:
    """The forecast section, planned for ``n_trials`` or else the study's recorded count."""
    recorded = sweep.cache.get(PLANNED_TRIALS_KEY)
    return forecast_section(
        sweep,
        n_trials=n_trials if n_trials is not None else _int_or_none(recorded),
        n_trials_source="--n-trials"
        if n_trials is not None
        else f"study user attribute {N_TRIALS_ATTR}",
        final_epochs=a.final_epochs,
        seeds=a.seeds,
        level=level,
        cost_model=cost_model,
    )


def _importances(sweep: Sweep, evaluator: str, progress: Progress) -> list[Importance]:
    """Hyperparameter importance for the objective, and for energy when the sweep has it."""
    progress("importance (objective)")
    sens = [importances(sweep, "objective", evaluator)]
    if sweep.has_energy:
        progress("importance (energy)")
        sens.append(importances(sweep, "energy", evaluator))
    return sens


def _study_info(sweep: Sweep, hardware: list[str]) -> m.StudyInfo:
    """What was run: the study, its trials by state, the best trial, hardware, elapsed time."""
    t = sweep.trials
    best = sweep.best_trial()
    starts, ends = t["started_at"].dropna(), t["ended_at"].dropna()
    elapsed = (ends.max() - starts.min()).total_seconds() if len(starts) and len(ends) else None
    src_counts = t["energy_source"].fillna("none").value_counts().to_dict()
    return m.StudyInfo(
        name=sweep.study,
        source_kind=sweep.source_kind,
        source=sweep.source,
        direction=sweep.direction,  # type: ignore[arg-type]
        n_trials=len(t),
        states={str(k): int(v) for k, v in t["state"].value_counts().items()},
        best_trial=None if best is None else int(best["number"]),
        best_value=None if best is None else _f(float(best["value"])),
        best_params={} if best is None else dict(best["params"] or {}),
        hardware=hardware,
        energy_sources={str(k): int(v) for k, v in src_counts.items()},
        elapsed_s=_f(elapsed),
    )


def _rnd_section(rnd: RndCost, a: Assumptions) -> m.RndSection:
    """The R&D cost (the paper's Tables 3/4): phases, total, what-ifs and their assumptions."""
    return m.RndSection(
        chosen_trial=rnd.chosen_trial,
        phases=[_phase(p) for p in rnd.phases],
        total=_phase(rnd.total),
        what_ifs=[_what_if(w) for w in rnd.what_ifs],
        assumptions=_assumptions_info(a),
        notes=list(rnd.notes),
    )


def _what_if(w: WhatIf) -> m.WhatIfRow:
    """One what-if scenario row, in report units."""
    return m.WhatIfRow(
        label=w.label,
        energy_kwh_pue=_f(w.energy_kwh_pue),
        co2e_kg=_f(w.co2e_kg),
        co2e_lbs=_f(g_to_lbs(w.co2e_g)),
        electricity_usd=_f(w.electricity_usd),
    )


def _assumptions_info(a: Assumptions) -> m.AssumptionsInfo:
    """The assumptions the projections used, with where each came from."""
    return m.AssumptionsInfo(
        final_epochs=a.final_epochs,
        seeds=a.seeds,
        pue=a.pue,
        pue_source=a.pue_source,
        g_per_kwh=a.intensity.g_per_kwh,
        intensity_source=a.intensity.label,
        usd_per_kwh=a.usd_per_kwh,
        usd_per_kwh_source=a.usd_per_kwh_source,
        gpu_price=a.gpu_price_label,
    )


def _importance_section(i: Importance) -> m.ImportanceSection:
    """Hyperparameter importance for one target (objective or energy)."""
    return m.ImportanceSection(
        target=i.target,  # type: ignore[arg-type]
        evaluator=i.evaluator,  # type: ignore[arg-type]
        importances=i.values,
        n_trials=i.n_trials,
        note=i.note,
    )


def _variance_section(
    sweep: Sweep, seed: SeedVariance, top_k: int, tolerance: float
) -> m.VarianceSection:
    """Seed variance, top-k spread, expected best vs budget, and the carbon spent after the best."""
    values = sweep.complete["value"].to_numpy(float)
    per_trial = _co2e_g_per_trial(sweep, len(values))
    maximize = sweep.direction == "maximize"
    evp_w = evp_curve(values, maximize=maximize, co2e_g_per_trial=per_trial)
    evp_wo = evp_curve(values, maximize=maximize, replacement=False, co2e_g_per_trial=per_trial)
    return m.VarianceSection(
        seed=_spread(seed.spread),
        seed_origin=seed.origin,
        seed_note=seed.note,
        top_k=top_k,
        top_k_spread=_spread(top_k_spread(sweep, top_k)),
        evp_with_replacement=_evp_rows(evp_w),
        evp_without_replacement=_evp_rows(evp_wo),
        co2e_kg_per_trial=None if per_trial is None else g_to_kg(per_trial),
        carbon_after_best=_carbon_after_best(carbon_after_best(sweep, tolerance)),
    )


def _co2e_g_per_trial(sweep: Sweep, n_done: int) -> float | None:
    """The sweep's carbon per complete trial, the price of each trial in the EVP curve."""
    co2_total = float(np.nansum(sweep.trials["co2e_g"].to_numpy(float)))
    return co2_total / n_done if n_done and sweep.has_carbon else None


def _evp_rows(points: list[EvpPoint]) -> list[m.EvpRow]:
    """Expected-best points as report rows, their carbon in kg."""
    return [
        m.EvpRow(
            n=p.n,
            expected=p.expected,
            std=p.std,
            low=p.low,
            high=p.high,
            co2e_kg=_f(g_to_kg(p.co2e_g)) if p.co2e_g is not None else None,
        )
        for p in points
    ]


def _carbon_after_best(cab: CarbonAfterBest | None) -> m.CarbonAfterBestInfo | None:
    """Carbon spent after the best came within tolerance, in kg (None: not known)."""
    if cab is None:
        return None
    return m.CarbonAfterBestInfo(
        tolerance=cab.tolerance,
        reached_at_trial=cab.reached_at_trial,
        co2e_kg_after=g_to_kg(cab.co2e_g_after),
        co2e_kg_total=g_to_kg(cab.co2e_g_total),
        share=_f(cab.share),
    )


def _checklist(
    sweep: Sweep,
    hardware: list[str],
    sens: list[Importance],
    seed: SeedVariance,
    rnd: RndCost,
) -> list[m.CheckRow]:
    """The paper's recommendations, each marked ok, partial or missing for this sweep."""
    t = sweep.trials
    items = checklist(
        n_trials_with_time=int((t["started_at"].notna() & t["ended_at"].notna()).sum()),
        n_trials=len(t),
        hardware=hardware,
        importance_targets=[i.target for i in sens if i.values],
        seed_runs=seed.spread.n if seed.spread else 0,
        measured_share=rnd.total.measured_share,
    )
    return [
        m.CheckRow(
            key=i.key,
            label=i.label,
            status=i.status,  # type: ignore[arg-type]
            detail=i.detail,
        )
        for i in items
    ]


def _notes(sweep: Sweep, rnd: RndCost, fc: m.ForecastSection | None) -> list[str]:
    """The report's notes: the source's, the R&D cost's, then what is missing or forecast how."""
    notes = list(sweep.notes) + list(rnd.notes)
    t = sweep.trials
    n_unscored = int(((t["state"] == "complete") & ~np.isfinite(t["value"].to_numpy(float))).sum())
    if n_unscored:
        notes.append(
            f"{n_unscored} complete trial(s) have no finite objective value (inf, or none "
            "recorded): left out of the best trial, importance, variance and expected best"
        )
    if not sweep.has_energy:
        notes.append("energy, carbon and cost figures are missing: no trial has energy data")
    if fc is None:
        notes.append("forecast: not made, no finished trial has energy data")
    else:
        notes.append(f"forecast method: {fc.method}")
        notes += [f"forecast: {n}" for n in fc.notes]
    return notes


def _int_or_none(x: object) -> int | None:
    """A recorded planned-trials count, or None when it is not a positive whole number."""
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return int(x) if x >= 1 and float(x).is_integer() else None


def _hardware(sweep: Sweep) -> list[str]:
    t = sweep.trials
    devices = sorted({str(d) for ds in t["devices"] if isinstance(ds, list) for d in ds})
    hosts = sorted({str(h) for h in t["host"] if isinstance(h, str) and h})
    return [f"host {h}" for h in hosts] + devices


def _points(sweep: Sweep) -> list[m.TrialPoint]:
    t = sweep.trials
    values = t["value"].to_numpy(float)
    ok = (t["state"].to_numpy() == "complete") & np.isfinite(values)
    scores = np.where(ok, sweep.sign * values, -np.inf)
    bsf = np.maximum.accumulate(scores) * sweep.sign
    # The unit helpers are plain arithmetic, so they take arrays too.
    cum = np.asarray(g_to_kg(cumulative_co2e_g(t)))  # type: ignore[arg-type]
    energy = np.asarray(j_to_kwh(t["energy_j"].to_numpy(float)))  # type: ignore[arg-type]
    return [
        m.TrialPoint(
            number=int(n),
            state=str(s),
            value=_f(v),
            best_so_far=_f(b),
            energy_kwh=_f(e),
            cum_co2e_kg=float(c),
        )
        for n, s, v, b, e, c in zip(t["number"], t["state"], values, bsf, energy, cum, strict=True)
    ]

"""The report as a typed, versioned model: what every renderer reads and JSON serialises.

``SCHEMA_VERSION`` is bumped on any change that could break a consumer (a field removed,
renamed or given another meaning); adding a field is not such a change. The schema is
documented in ``docs/report-schema.md``. Units are in field names; unknown numbers are
``null`` in JSON (never NaN).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION: Final = 2


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, ser_json_inf_nan="null", extra="forbid")


class StudyInfo(_Model):
    name: str
    source_kind: str  # optuna | ray | ledger | records
    source: str
    direction: Literal["minimize", "maximize"]
    n_trials: int
    states: dict[str, int]
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, object]
    hardware: list[str]
    energy_sources: dict[str, int]  # trials per energy source ("none": no energy data)
    elapsed_s: float | None  # first trial start to last trial end


class PhaseRow(_Model):
    phase: Literal["tuning", "final", "seed", "idle", "total"]
    runs: float
    basis: str  # recorded | projected | mixed | none (measured_share says what was measured)
    hours: float | None
    gpu_hours: float | None
    energy_kwh: float | None  # device energy
    energy_kwh_pue: float | None  # facility energy (x PUE)
    co2e_kg: float | None
    co2e_lbs: float | None
    electricity_usd: float | None
    cloud_usd_low: float | None
    cloud_usd_high: float | None
    measured_share: float | None
    estimated_share: float | None
    projected_share: float | None
    runs_without_energy: int


class WhatIfRow(_Model):
    label: str
    energy_kwh_pue: float | None
    co2e_kg: float | None
    co2e_lbs: float | None
    electricity_usd: float | None


class AssumptionsInfo(_Model):
    final_epochs: float
    seeds: int
    pue: float
    g_per_kwh: float
    intensity_source: str
    pue_source: str = ""  # as recorded | given | default (...); "" in reports made before it
    usd_per_kwh: float
    usd_per_kwh_source: str
    gpu_price: str  # "" when no cloud price was applied


class RndSection(_Model):
    chosen_trial: int | None
    phases: list[PhaseRow]
    total: PhaseRow
    what_ifs: list[WhatIfRow]
    assumptions: AssumptionsInfo
    notes: list[str]


class ImportanceSection(_Model):
    target: Literal["objective", "energy"]
    evaluator: str
    importances: dict[str, float]
    n_trials: int
    note: str


class SpreadInfo(_Model):
    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


class EvpRow(_Model):
    n: int
    expected: float
    std: float
    low: float
    high: float
    co2e_kg: float | None


class CarbonAfterBestInfo(_Model):
    tolerance: float
    reached_at_trial: int | None
    co2e_kg_after: float
    co2e_kg_total: float
    share: float | None


class VarianceSection(_Model):
    seed: SpreadInfo | None
    seed_origin: str
    seed_note: str
    top_k: int
    top_k_spread: SpreadInfo | None
    evp_with_replacement: list[EvpRow]
    evp_without_replacement: list[EvpRow]
    co2e_kg_per_trial: float | None
    carbon_after_best: CarbonAfterBestInfo | None


class CheckRow(_Model):
    key: str
    label: str
    status: Literal["ok", "partial", "missing"]
    detail: str


class PolicyRequirement(_Model):
    """One ``[reporting]`` requirement of the lab policy, checked against this report."""

    key: Literal["seeds", "sensitivity", "variance"]
    label: str  # "Lab policy: seeds"
    status: Literal["ok", "missing"]
    required: bool | int  # seeds: the number required; the others: true
    found: bool | int  # seeds: complete final + seed runs in the ledger; the others: reported
    detail: str  # names the policy file; says how to meet it when missing


class PolicyCheck(_Model):
    """The lab policy a report was checked against: its file and each requirement."""

    file: str | None  # the policy file as found or given; None for a Policy built in code
    requirements: list[PolicyRequirement]  # [] when the policy sets no [reporting] requirement


class TrialPoint(_Model):
    """One trial in the figures: in number order."""

    number: int
    state: str
    value: float | None
    best_so_far: float | None
    energy_kwh: float | None
    cum_co2e_kg: float


class ForecastCost(_Model):
    """A cost in report units; null where the sweep recorded no such figure."""

    energy_kwh: float | None  # device energy
    co2e_kg: float | None
    usd: float | None
    gpu_hours: float | None


class ForecastRange(_Model):
    """A forecast (always an estimate) with its central interval at ``ForecastSection.level``."""

    runs: float  # trials or training runs it covers
    estimate: ForecastCost
    low: ForecastCost
    high: ForecastCost


class ForecastSection(_Model):
    """Cost to finish the sweep and of its final training, forecast from the trials so far."""

    estimated: Literal[True] = True
    method: str
    level: float
    n_trials_planned: int | None  # None: unknown (no --n-trials, no recorded n_trials)
    n_trials_planned_source: str  # "--n-trials" | "study user attribute n_trials" | ""
    n_finished: int  # finished trials with energy data: the forecast's sample
    n_running: int
    n_remaining: int | None
    spent: ForecastCost
    to_finish: ForecastRange | None
    sweep_total: ForecastRange | None
    final: ForecastRange | None  # final training: final_epochs x median complete trial
    seeds: ForecastRange | None  # seed reruns: seeds x final training
    notes: list[str]


class Report(_Model):
    schema_version: Literal[2] = SCHEMA_VERSION
    generated_at: datetime
    tool_version: str
    study: StudyInfo
    rnd: RndSection
    sensitivity: list[ImportanceSection]
    variance: VarianceSection
    checklist: list[CheckRow]
    trials: list[TrialPoint]
    notes: list[str]
    forecast: ForecastSection | None = None  # None: no trial with energy data to forecast from
    policy: PolicyCheck | None = None  # None: no lab policy checked (none found, --no-policy)

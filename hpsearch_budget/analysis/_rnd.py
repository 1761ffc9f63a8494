"""The R&D cost of a sweep in the shape of Strubell et al. (2019), Tables 3 and 4.

Three phases: the tuning sweep as measured; the final training of the chosen configuration;
its seed reruns. Final and seed runs come from ledger rows of phase ``final`` / ``seed`` when
they were recorded, otherwise they are *projected* from the chosen trial's cost times the
user's factors (``final_epochs``: how many times longer the final training is than a tuning
trial; ``seeds``: how many reruns). Every energy figure is split by how it was obtained, so a
report can say which share is measured, estimated or projected.

Facility energy is device energy x PUE (the PUE each row recorded, else the assumption);
carbon is the recorded ``co2e_g`` of each row, else facility kWh x the assumed intensity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from hpsearch_budget.analysis import _paper
from hpsearch_budget.analysis._sweep import Sweep
from hpsearch_budget.carbon import DEFAULT_PUE, Intensity
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import g_to_kg, g_to_lbs, j_to_kwh, s_to_hours

#: Energy sources that came from hardware (a counter, or sampled power integrated).
MEASURED_SOURCES = frozenset({"measured", "integrated"})


@dataclass(frozen=True)
class Assumptions:
    """Factors used where the data is silent, and for projections. All shown in a report."""

    final_epochs: float = 1.0  # final training = this x the chosen trial's cost
    seeds: int = 0  # seed reruns of the final training
    pue: float = DEFAULT_PUE
    pue_source: str = "default (Strubell et al. 2019)"
    intensity: Intensity = field(default_factory=lambda: Intensity(475.0, "world average"))
    usd_per_kwh: float = 0.1268
    usd_per_kwh_source: str = "US average retail price"
    # Cloud price of one GPU-hour, (spot low, on-demand high), and what it is for.
    gpu_usd_per_hour: tuple[float, float] | None = None
    gpu_price_label: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.final_epochs) and self.final_epochs >= 0):
            raise HpauditInputError(f"final_epochs must be a number >= 0, got {self.final_epochs}")
        if not (math.isfinite(self.seeds) and self.seeds >= 0 and self.seeds == int(self.seeds)):
            raise HpauditInputError(f"seeds must be a whole number >= 0 reruns, got {self.seeds}")
        if not (math.isfinite(self.pue) and self.pue >= 1.0):
            raise HpauditInputError(f"PUE must be >= 1.0, got {self.pue}")
        if not (math.isfinite(self.usd_per_kwh) and self.usd_per_kwh >= 0):
            raise HpauditInputError(
                f"usd_per_kwh must be a finite number >= 0, got {self.usd_per_kwh}"
            )
        if self.gpu_usd_per_hour is not None:
            low, high = self.gpu_usd_per_hour
            if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
                raise HpauditInputError(
                    "gpu_usd_per_hour must be (low, high) USD per GPU-hour, finite, with "
                    f"0 <= low <= high, got {self.gpu_usd_per_hour}"
                )


@dataclass(frozen=True)
class PhaseCost:
    """One row of the R&D table."""

    phase: str  # tuning | final | seed | total
    runs: float  # trials or runs (a projection may be fractional: 0.5 x a trial)
    # recorded (summed from the sweep's rows, whatever their energy source: the *_j fields
    # say how much was measured) | projected | mixed | none
    basis: str
    wall_s: float
    gpu_s: float
    energy_j: float  # device energy, NaN when no run of this phase has energy data
    energy_kwh_pue: float  # facility energy: device kWh x PUE
    co2e_g: float
    electricity_usd: float
    cloud_usd: tuple[float, float] | None
    measured_j: float  # parts of energy_j by how they were obtained
    estimated_j: float
    projected_j: float
    runs_without_energy: int = 0

    @property
    def hours(self) -> float:
        return s_to_hours(self.wall_s)

    @property
    def gpu_hours(self) -> float:
        return s_to_hours(self.gpu_s)

    @property
    def co2e_kg(self) -> float:
        return g_to_kg(self.co2e_g)

    @property
    def co2e_lbs(self) -> float:
        return g_to_lbs(self.co2e_g)

    @property
    def measured_share(self) -> float:
        """Fraction of the device energy that a hardware counter or power sampler measured."""
        return self.measured_j / self.energy_j if self.energy_j > 0 else math.nan


@dataclass(frozen=True)
class WhatIf:
    """The R&D total under another assumption."""

    label: str
    energy_kwh_pue: float
    co2e_g: float
    electricity_usd: float

    @property
    def co2e_kg(self) -> float:
        return g_to_kg(self.co2e_g)


@dataclass(frozen=True)
class RndCost:
    """Tables 3/4 of the paper for one sweep: phases, total, what-ifs, and the assumptions."""

    phases: list[PhaseCost]
    total: PhaseCost
    chosen_trial: int | None
    assumptions: Assumptions
    what_ifs: list[WhatIf] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _row_costs(df: pd.DataFrame, a: Assumptions) -> dict[str, np.ndarray]:
    """Per-row facility kWh, carbon and measured/estimated joules (NaN where unknown)."""
    energy = df["energy_j"].to_numpy(float)
    pue = np.where(np.isfinite(df["pue"].to_numpy(float)), df["pue"].to_numpy(float), a.pue)
    kwh = j_to_kwh(energy) * pue
    co2 = df["co2e_g"].to_numpy(float)
    co2 = np.where(np.isfinite(co2), co2, kwh * a.intensity.g_per_kwh)
    src = df["energy_source"].astype(object).to_numpy()
    measured = np.array([s in MEASURED_SOURCES for s in src], dtype=bool)
    return {"energy": energy, "kwh": kwh, "co2": co2, "measured": measured}


def _nansum(x: np.ndarray) -> float:
    return float(np.nansum(x)) if np.isfinite(x).any() else math.nan


def _cloud(gpu_s: float, wall_s: float, a: Assumptions) -> tuple[float, float] | None:
    """Cloud price range of the GPU time; with no GPU time recorded, of the wall time on one
    accelerator per run (the paper's assumption: hours x price)."""
    if a.gpu_usd_per_hour is None:
        return None
    hours = s_to_hours(gpu_s if math.isfinite(gpu_s) and gpu_s > 0 else wall_s)
    if not math.isfinite(hours):
        return None
    low, high = a.gpu_usd_per_hour
    return hours * low, hours * high


def measured_phase(phase: str, df: pd.DataFrame, a: Assumptions) -> PhaseCost:
    """A phase summed from recorded rows (trials, or ledger final/seed runs)."""
    c = _row_costs(df, a)
    known = np.isfinite(c["energy"])
    energy = _nansum(c["energy"])
    gpu_s = _nansum(df["gpu_s"].to_numpy(float))
    wall_s = float(np.nansum(df["wall_s"].to_numpy(float)))
    return PhaseCost(
        phase=phase,
        runs=float(len(df)),
        basis="recorded" if known.any() else "none",
        wall_s=wall_s,
        gpu_s=gpu_s,
        energy_j=energy,
        energy_kwh_pue=_nansum(c["kwh"]),
        co2e_g=_nansum(c["co2"]),
        electricity_usd=_nansum(c["kwh"]) * a.usd_per_kwh,
        cloud_usd=_cloud(gpu_s, wall_s, a),
        measured_j=float(np.nansum(c["energy"][known & c["measured"]])),
        estimated_j=float(np.nansum(c["energy"][known & ~c["measured"]])),
        projected_j=0.0,
        runs_without_energy=int((~known).sum()),
    )


def projected_phase(
    phase: str, chosen: pd.Series | None, factor: float, a: Assumptions
) -> PhaseCost:
    """A phase projected as ``factor`` x the chosen trial's recorded cost."""
    if chosen is None:  # nothing to project from: no run is counted, the figures are unknown
        nan = math.nan
        return PhaseCost(phase, 0.0, "none", nan, nan, nan, nan, nan, nan, None, 0, 0, 0)
    one = measured_phase(phase, chosen.to_frame().T, a)
    energy = one.energy_j * factor
    gpu_s = one.gpu_s * factor
    return PhaseCost(
        phase=phase,
        runs=factor,
        basis="projected" if math.isfinite(energy) else "none",
        wall_s=one.wall_s * factor,
        gpu_s=gpu_s,
        energy_j=energy,
        energy_kwh_pue=one.energy_kwh_pue * factor,
        co2e_g=one.co2e_g * factor,
        electricity_usd=one.electricity_usd * factor,
        cloud_usd=_cloud(gpu_s, one.wall_s * factor, a),
        measured_j=0.0,
        estimated_j=0.0,
        projected_j=energy if math.isfinite(energy) else 0.0,
    )


def _sum(x: float, y: float) -> float:
    """NaN-aware sum: unknown only when both are unknown."""
    if math.isnan(x):
        return y
    return x if math.isnan(y) else x + y


def total_of(phases: list[PhaseCost], a: Assumptions) -> PhaseCost:
    bases = {p.basis for p in phases if p.basis != "none"}
    gpu_s = math.nan
    for p in phases:
        gpu_s = _sum(gpu_s, p.gpu_s)
    energy = math.nan
    kwh = co2 = usd = wall = math.nan
    for p in phases:
        energy, kwh, co2 = (
            _sum(energy, p.energy_j),
            _sum(kwh, p.energy_kwh_pue),
            _sum(co2, p.co2e_g),
        )
        usd, wall = _sum(usd, p.electricity_usd), _sum(wall, p.wall_s)
    return PhaseCost(
        phase="total",
        runs=sum(p.runs for p in phases),
        basis=bases.pop() if len(bases) == 1 else ("mixed" if bases else "none"),
        wall_s=wall,
        gpu_s=gpu_s,
        energy_j=energy,
        energy_kwh_pue=kwh,
        co2e_g=co2,
        electricity_usd=usd,
        cloud_usd=_cloud(gpu_s, wall, a),
        measured_j=sum(p.measured_j for p in phases),
        estimated_j=sum(p.estimated_j for p in phases),
        projected_j=sum(p.projected_j for p in phases),
        runs_without_energy=sum(p.runs_without_energy for p in phases),
    )


def rnd_cost(
    sweep: Sweep,
    assumptions: Assumptions | None = None,
    *,
    what_if_intensity: Intensity | None = None,
    what_if_pue: float | None = None,
    more_trials: int | None = None,
) -> RndCost:
    """Tuning + final training + seed reruns, with the total and what-if variants.

    >>> sw = Sweep.from_records("s", [
    ...     {"number": i, "value": v, "energy_j": 3.6e6, "co2e_g": 400.0, "pue": 1.0,
    ...      "wall_s": 3600.0, "energy_source": "measured"} for i, v in enumerate([0.3, 0.1])
    ... ])
    >>> r = rnd_cost(sw, Assumptions(final_epochs=2, seeds=3))
    >>> [(p.phase, p.basis, p.energy_kwh_pue) for p in r.phases]
    [('tuning', 'recorded', 2.0), ('final', 'projected', 2.0), ('seed', 'projected', 6.0)]
    >>> r.total.co2e_g, round(r.total.measured_share, 3)
    (4000.0, 0.2)
    """
    a = assumptions or Assumptions()
    chosen = sweep.best_trial()
    notes: list[str] = []
    tuning = measured_phase("tuning", sweep.trials, a)
    phases = [tuning]
    runs = sweep.runs
    for phase, factor in (("final", a.final_epochs), ("seed", a.final_epochs * a.seeds)):
        recorded = runs[runs["phase"] == phase] if len(runs) else runs
        if len(recorded):
            phases.append(measured_phase(phase, _as_trials(recorded), a))
            notes.append(f"{phase}: {len(recorded)} run(s) recorded in the ledger")
        else:
            phases.append(projected_phase(phase, chosen, factor, a))
    idle = _idle_phase(runs, a, notes)
    if idle is not None:  # last: tuning, final, seed keep their places
        phases.append(idle)
    if chosen is None:
        notes.append("no complete trial: final training and seed reruns cannot be projected")
    unknown = [p.phase for p in phases[1:] if p.basis == "none" and p.runs > 0]
    if chosen is not None and unknown:
        notes.append(
            f"{' and '.join(unknown)}: the chosen trial #{int(chosen['number'])} has no energy "
            f"data, so they cannot be projected and the total leaves {' and '.join(unknown)} "
            "out (it is not the whole R&D cost); meter that trial or record the runs in the "
            "ledger"
        )
    if tuning.runs_without_energy:
        notes.append(
            f"{tuning.runs_without_energy} of {int(tuning.runs)} trial(s) have no energy data "
            "and are left out of the sums"
        )
    total = total_of(phases, a)
    if a.gpu_usd_per_hour is not None and not (total.gpu_s > 0):
        notes.append(
            "no GPU time recorded: cloud cost assumes one accelerator per run for its "
            "wall-clock time"
        )
    what_ifs = _what_ifs(phases, total, a, what_if_intensity, what_if_pue, more_trials)
    return RndCost(
        phases, total, None if chosen is None else int(chosen["number"]), a, what_ifs, notes
    )


def _idle_phase(runs: pd.DataFrame, a: Assumptions, notes: list[str]) -> PhaseCost | None:
    """The ``idle`` rows a ledger recorded (what the meter measured while no trial of the
    sweep ran) as a phase of no runs, or None when there are none."""
    recorded = runs[runs["phase"] == "idle"] if len(runs) else runs
    if not len(recorded):
        return None
    idle = replace(measured_phase("idle", _as_trials(recorded), a), runs=0.0)
    notes.append(
        f"idle between trials: {len(recorded)} ledger row(s), what the meter measured while no "
        "trial ran (sampler, storage, devices idling); in the total, not a trial; a "
        "'more tuning trials' what-if adds it per trial"
    )
    return idle


def _as_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """Ledger runs carry the same cost columns as trials."""
    return runs.reset_index(drop=True)


def _what_ifs(
    phases: list[PhaseCost],
    total: PhaseCost,
    a: Assumptions,
    intensity: Intensity | None,
    pue: float | None,
    more_trials: int | None,
) -> list[WhatIf]:
    out: list[WhatIf] = []
    if not math.isfinite(total.energy_kwh_pue):
        return out
    # The PUE actually applied, energy-weighted, so a PUE what-if rescales facility energy.
    device_kwh = j_to_kwh(total.energy_j)
    pue_used = total.energy_kwh_pue / device_kwh if device_kwh > 0 else a.pue
    g_used = total.co2e_g / total.energy_kwh_pue if total.energy_kwh_pue > 0 else 0.0
    new_pue = pue if pue is not None else pue_used
    new_g = intensity.g_per_kwh if intensity is not None else g_used
    if intensity is not None or pue is not None:
        parts = []
        if intensity is not None:
            parts.append(f"{intensity.g_per_kwh:g} g/kWh ({intensity.label})")
        if pue is not None:
            parts.append(f"PUE {pue:g}")
        kwh = device_kwh * new_pue  # the paper's Eq. 1 with measured energy in place of P x t
        out.append(
            WhatIf(
                "at " + ", ".join(parts),
                kwh,
                _paper.co2e_g(kwh, new_g),
                _paper.electricity_cost_usd(kwh, a.usd_per_kwh),
            )
        )
    tuning = phases[0]
    n = int(tuning.runs)
    # The mean is over the trials whose energy is in the sums (the others are left out).
    known = n - tuning.runs_without_energy
    extra = more_trials if more_trials is not None else n
    if extra > 0 and known > 0 and math.isfinite(tuning.energy_kwh_pue):
        # The sweep's mean cost per trial, pruned and failed trials included, and the idle
        # between trials: more trials, more gaps between them.
        idle = next((p for p in phases if p.phase == "idle"), None)
        idle_kwh, idle_co2 = (idle.energy_kwh_pue, idle.co2e_g) if idle else (math.nan,) * 2
        kwh = total.energy_kwh_pue + extra * _sum(tuning.energy_kwh_pue, idle_kwh) / known
        co2 = total.co2e_g + extra * _sum(tuning.co2e_g, idle_co2) / known
        out.append(
            WhatIf(
                f"with {extra} more tuning trials",
                kwh,
                co2,
                _paper.electricity_cost_usd(kwh, a.usd_per_kwh),
            )
        )
    return out

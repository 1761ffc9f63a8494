"""R&D cost, variance, carbon-after-best, sensitivity and checklist on hand-computed sweeps."""

from __future__ import annotations

import math
import random
import warnings

import optuna
import pandas as pd
import pytest

from hpsearch_budget.analysis import (
    Assumptions,
    Sweep,
    carbon_after_best,
    checklist,
    importances,
    rnd_cost,
    seed_variance,
    top_k_spread,
)
from hpsearch_budget.carbon import Intensity
from hpsearch_budget.errors import HpauditInputError


def _sweep(values: list[float], *, runs: pd.DataFrame | None = None, **kw: object) -> Sweep:
    rows = [
        {
            "number": i,
            "value": v,
            "params": {"lr": i},
            "energy_j": 3.6e6,
            "co2e_g": 500.0,
            "pue": 1.25,
            "wall_s": 1800.0,
            "gpu_s": 1800.0,
            "energy_source": "measured",
        }
        for i, v in enumerate(values)
    ]
    sw = Sweep.from_records("s", rows, **kw)
    if runs is not None:
        sw.runs = runs
    return sw


def test_rnd_projects_final_and_seeds_from_the_chosen_trial() -> None:
    sw = _sweep([0.5, 0.2, 0.9])  # minimise: trial 1 is chosen
    a = Assumptions(final_epochs=4, seeds=2, gpu_usd_per_hour=(1.0, 3.0))
    r = rnd_cost(sw, a)
    tuning, final, seed = r.phases
    assert r.chosen_trial == 1
    assert tuning.energy_kwh_pue == pytest.approx(3 * 1.25)
    assert final.basis == "projected" and final.energy_kwh_pue == pytest.approx(4 * 1.25)
    assert seed.co2e_g == pytest.approx(8 * 500.0)
    assert r.total.co2e_g == pytest.approx((3 + 4 + 8) * 500.0)
    assert r.total.gpu_hours == pytest.approx(15 * 0.5)
    assert r.total.cloud_usd == pytest.approx((7.5, 22.5))
    assert r.total.measured_share == pytest.approx(3 / 15)
    assert r.total.co2e_lbs == pytest.approx(7.5 / 0.45359237)


def test_rnd_uses_recorded_final_and_seed_runs() -> None:
    runs = pd.DataFrame(
        [
            {
                "phase": "final",
                "status": "complete",
                "value": 0.21,
                "params": {},
                "wall_s": 7200.0,
                "energy_j": 7.2e6,
                "co2e_g": 900.0,
                "usd": 0.0,
                "gpu_s": 7200.0,
                "pue": 1.0,
                "g_per_kwh": 450.0,
                "energy_source": "measured",
                "devices": [],
                "host": "h",
            },
            {
                "phase": "seed",
                "status": "complete",
                "value": 0.23,
                "params": {},
                "wall_s": 7200.0,
                "energy_j": 7.2e6,
                "co2e_g": 900.0,
                "usd": 0.0,
                "gpu_s": 7200.0,
                "pue": 1.0,
                "g_per_kwh": 450.0,
                "energy_source": "estimated",
                "devices": [],
                "host": "h",
            },
        ]
    )
    r = rnd_cost(_sweep([0.5, 0.2], runs=runs), Assumptions(final_epochs=10, seeds=5))
    assert [p.basis for p in r.phases] == ["recorded", "recorded", "recorded"]
    assert r.phases[1].energy_kwh_pue == pytest.approx(2.0)  # recorded, not 10 x a trial
    assert r.total.co2e_g == pytest.approx(2 * 500 + 900 + 900)
    # the seed row is estimated: measured share = (2 trials + final) / all device energy
    assert r.total.measured_share == pytest.approx((2 * 3.6e6 + 7.2e6) / (2 * 3.6e6 + 14.4e6))


def test_rnd_what_ifs() -> None:
    sw = _sweep([0.5, 0.2])
    r = rnd_cost(
        sw,
        Assumptions(),
        what_if_intensity=Intensity(100.0, "test"),
        what_if_pue=1.0,
        more_trials=6,
    )
    region, more = r.what_ifs
    device_kwh = 3.0  # 2 trials + the final training (1 x the chosen trial), no seeds
    assert region.energy_kwh_pue == pytest.approx(device_kwh * 1.0)
    assert region.co2e_g == pytest.approx(device_kwh * 100.0)
    assert more.co2e_g == pytest.approx(r.total.co2e_g + 6 * 500.0)


def test_more_trials_what_if_averages_only_trials_with_energy_data() -> None:
    # Trial 2 has no energy data: the tuning sums leave it out, so the mean cost per trial is
    # that of trials 0 and 1 (1 kWh x PUE 1.25, 500 g each), not those sums over 3 trials.
    sw = Sweep.from_records(
        "s",
        [
            *_sweep([0.5, 0.2]).trials.to_dict("records"),
            {"number": 2, "value": 0.7, "params": {"lr": 2}, "wall_s": 1800.0},
        ],
    )
    r = rnd_cost(sw, Assumptions(), more_trials=4)
    assert r.phases[0].runs_without_energy == 1
    (more,) = r.what_ifs
    assert more.energy_kwh_pue == pytest.approx(r.total.energy_kwh_pue + 4 * 1.25)
    assert more.co2e_g == pytest.approx(r.total.co2e_g + 4 * 500.0)


def test_rnd_without_energy_reports_time_and_says_so() -> None:
    sw = Sweep.from_records("s", [{"number": 0, "value": 1.0, "wall_s": 60.0}])
    r = rnd_cost(sw)
    assert math.isnan(r.total.energy_j) and r.total.wall_s == pytest.approx(120.0)
    assert r.phases[0].basis == "none" and any("no energy data" in n for n in r.notes)


def test_rnd_without_a_complete_trial_projects_nothing_and_counts_no_run() -> None:
    rows = [{"number": i, "state": "failed", "energy_j": 100.0, "wall_s": 10.0} for i in range(3)]
    r = rnd_cost(Sweep.from_records("s", rows), Assumptions(final_epochs=2, seeds=3))
    tuning, final, seed = r.phases
    assert r.chosen_trial is None and tuning.runs == 3
    assert (final.runs, final.basis, seed.runs) == (0, "none", 0)
    assert r.total.runs == 3 and r.total.energy_j == pytest.approx(300.0)
    assert any("cannot be projected" in n for n in r.notes)


def test_a_chosen_trial_without_energy_says_the_total_leaves_its_projections_out() -> None:
    rows = [
        {"number": 0, "value": 0.3, "energy_j": 3.6e6, "wall_s": 60.0, "energy_source": "measured"},
        {"number": 1, "value": 0.1, "wall_s": 60.0},  # the best trial, not metered
    ]
    r = rnd_cost(Sweep.from_records("s", rows), Assumptions(final_epochs=2, seeds=3))
    _, final, seed = r.phases
    assert (final.basis, seed.basis) == ("none", "none") and final.runs == 2
    assert r.total.energy_j == pytest.approx(3.6e6)  # the final and seed runs are not in it
    assert any(
        n.startswith("final and seed: the chosen trial #1 has no energy data")
        and "the total leaves final and seed out" in n
        for n in r.notes
    )


def test_assumptions_reject_bad_factors() -> None:
    for bad in ({"final_epochs": -1.0}, {"seeds": -2}, {"pue": 0.9}):
        with pytest.raises(HpauditInputError):
            Assumptions(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"seeds": math.nan},  # used to give a NaN seed phase and a NaN run count
        {"seeds": 2.5},
        {"usd_per_kwh": -0.1},
        {"usd_per_kwh": math.nan},
        {"gpu_usd_per_hour": (math.nan, 1.0)},
        {"gpu_usd_per_hour": (1.0, -1.0)},  # used to give negative cloud costs
        {"gpu_usd_per_hour": (3.0, 1.0)},
    ],
)
def test_assumptions_reject_nan_fractional_seeds_and_bad_prices(bad: dict) -> None:
    with pytest.raises(HpauditInputError, match=next(iter(bad))):
        Assumptions(**bad)


def test_seed_variance_origins() -> None:
    none = seed_variance(_sweep([0.5, 0.2]))
    assert none.spread is None and "seed" in none.note
    repeated = Sweep.from_records(
        "s",
        [
            {"number": 0, "value": 0.30, "params": {"lr": 1}},
            {"number": 1, "value": 0.20, "params": {"lr": 1}},
            {"number": 2, "value": 0.26, "params": {"lr": 1}},
            {"number": 3, "value": 0.10, "params": {"lr": 2}},
        ],
        direction="maximize",
    )
    sv = seed_variance(repeated)
    assert sv.origin == "repeated trials" and sv.spread is not None
    assert sv.spread.n == 3 and sv.spread.std == pytest.approx(pd.Series([0.3, 0.2, 0.26]).std())
    assert "picked for its value" in sv.note  # the best run is among them: a biased mean
    runs = pd.DataFrame({"phase": ["seed", "seed", "final"], "value": [1.0, 2.0, 3.0]})
    led = seed_variance(_sweep([0.5, 0.2], runs=runs))
    assert led.origin == "ledger seed runs" and led.spread is not None and led.spread.mean == 2.0


def test_top_k_and_carbon_after_best_by_hand() -> None:
    sw = Sweep.from_records(
        "s",
        [
            {"number": 0, "value": 0.50, "co2e_g": 1.0},
            {"number": 1, "value": 0.80, "co2e_g": 2.0},
            {"number": 2, "state": "pruned", "value": float("nan"), "co2e_g": 4.0},
            {"number": 3, "value": 0.898, "co2e_g": 8.0},  # within 0.5% of 0.9
            {"number": 4, "value": 0.90, "co2e_g": 16.0},
            {"number": 5, "value": 0.10, "co2e_g": 32.0},
        ],
        direction="maximize",
    )
    top = top_k_spread(sw, 2)
    assert top is not None and (top.min, top.max, top.n) == (0.898, 0.9, 2)
    cab = carbon_after_best(sw)
    assert cab is not None and cab.reached_at_trial == 3
    assert cab.co2e_g_after == 48.0 and cab.share == pytest.approx(48 / 63)
    strict = carbon_after_best(sw, tolerance=0.0)
    assert strict is not None and strict.reached_at_trial == 4 and strict.co2e_g_after == 32.0
    with pytest.raises(HpauditInputError):
        carbon_after_best(sw, tolerance=1.5)


def _random_sweep(n: int = 80) -> Sweep:
    rng = random.Random(3)
    rows = []
    for i in range(n):
        x, y, opt = rng.uniform(0, 1), rng.randint(1, 8), rng.choice(["adam", "sgd"])
        rows.append(
            {
                "number": i,
                "value": (x - 0.3) ** 2,
                "params": {"x": x, "y": y, "opt": opt},
                "energy_j": 1000.0 * y,
            }
        )
    return Sweep.from_records("s", rows)


@pytest.mark.parametrize("evaluator", ["ped-anova", "fanova"])
def test_importance_finds_the_parameter_that_matters(evaluator: str) -> None:
    sw = _random_sweep()
    obj = importances(sw, "objective", evaluator)
    energy = importances(sw, "energy", evaluator)
    assert obj.evaluator == evaluator and obj.n_trials == 80
    assert max(obj.values, key=obj.values.__getitem__) == "x"
    assert max(energy.values, key=energy.values.__getitem__) == "y"
    assert sum(obj.values.values()) == pytest.approx(1.0)


def test_the_default_evaluator_does_not_warn_that_it_is_experimental() -> None:
    # Optuna 4.0 (the lowest supported) marks PED-ANOVA experimental: every `hpaudit report`
    # printed an ExperimentalWarning on stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        imp = importances(_random_sweep())
    assert imp.evaluator == "ped-anova" and imp.values


def test_importance_with_too_few_trials_says_why() -> None:
    imp = importances(Sweep.from_records("s", [{"number": 0, "value": 1.0, "params": {"a": 1}}]))
    assert imp.values == {} and "need at least" in imp.note
    with pytest.raises(HpauditInputError):
        importances(_random_sweep(), "accuracy")
    with pytest.raises(HpauditInputError):
        importances(_random_sweep(), evaluator="shap")


def test_checklist_flags_what_is_missing() -> None:
    items = checklist(
        n_trials_with_time=2,
        n_trials=4,
        hardware=[],
        importance_targets=[],
        seed_runs=3,
        measured_share=0.95,
    )
    status = {i.key: i.status for i in items}
    assert status == {
        "training_time": "partial",
        "hardware": "missing",
        "sensitivity": "missing",
        "seeds": "ok",
        "measured_energy": "ok",
    }


def test_sweep_rejects_bad_records() -> None:
    with pytest.raises(HpauditInputError):
        Sweep.from_records("s", [{"value": 1.0}])
    with pytest.raises(HpauditInputError):
        Sweep.from_records("s", [{"number": 0, "state": "exploded"}])
    with pytest.raises(HpauditInputError):
        Sweep.from_records("s", [{"number": 0}], direction="up")

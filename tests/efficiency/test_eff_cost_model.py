"""TrialCostModel: a cost model learned from earlier sweeps forecasts a new sweep from a few
trials better than their mean, from plain pairs and from a real ledger."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch_budget.budget import Cost, TrialCostModel, forecast_sweep, forecast_sweep_from_entries
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.optuna import draw_params

SPACE = {
    "batch": IntDistribution(16, 512, log=True),
    "units": IntDistribution(64, 1024, log=True),
    "layers": IntDistribution(1, 5),
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "opt": CategoricalDistribution(["sgd", "adam"]),
}


def _cost(p: dict, scale: float, rng: np.random.Generator) -> float:
    """A skewed cost (coefficient of variation ~0.7, as on LCBench): smaller batches, wider and
    deeper nets cost more, Adam 30% more, 15% noise; the learning rate does not matter."""
    adam = 1.3 if p["opt"] == "adam" else 1.0
    flops = (p["units"] / 64) ** 0.6 * (512 / p["batch"]) ** 0.4 * (1 + 0.3 * p["layers"]) * adam
    return scale * flops * rng.lognormal(0.0, 0.15)


def _sweep(scale: float, n: int, seed: int) -> list[tuple[dict, float]]:
    rng = np.random.default_rng(seed)
    return [(p, _cost(p, scale, rng)) for p in draw_params(SPACE, n, seed=seed)]


@pytest.fixture(scope="module")
def model() -> TrialCostModel:
    # earlier sweeps on other "tasks": the same shape, scales 100x apart
    return TrialCostModel.fit({f"t{i}": _sweep(s, 80, i) for i, s in enumerate((1.0, 10.0, 100.0))})


def _forecasts(
    model_of: Callable[[list[tuple[dict, float]]], TrialCostModel],
    n_seen: int,
    n_total: int,
    first_seed: int,
) -> tuple[dict[str, list[float]], list[bool], set[str]]:
    """Forecast 20 new sweeps (scale 37, unseen by any earlier model) from their first
    ``n_seen`` trials, by their mean and by ``model_of(seen)``: each one's absolute errors,
    whether the model's interval covered the truth, and the model's method lines."""
    space = draw_params(SPACE, 2000, seed=99)
    errors: dict[str, list[float]] = {"mean": [], "model": []}
    covered, methods = [], set()
    for seed in range(20):
        sweep = _sweep(37.0, n_total, first_seed + seed)
        params, costs = [p for p, _ in sweep], [c for _, c in sweep]
        truth, seen = sum(costs), costs[:n_seen]
        plain = forecast_sweep(seen, n_total=n_total, seed=seed)
        fit = forecast_sweep(
            seen,
            n_total=n_total,
            seed=seed,
            cost_model=model_of(sweep[:n_seen]),
            params=params[:n_seen],
            space=space,
        )
        errors["mean"].append(abs(plain.total.energy_j / truth - 1))
        errors["model"].append(abs(fit.total.energy_j / truth - 1))
        covered.append(fit.low.energy_j <= truth <= fit.high.energy_j)
        methods.add(fit.method)
    return errors, covered, methods


def test_model_forecast_beats_the_mean_of_few_trials(model: TrialCostModel) -> None:
    errors, covered, methods = _forecasts(lambda _: model, 10, 100, 1000)
    assert all("cost model of 3 earlier sweeps" in m for m in methods)
    assert np.median(errors["model"]) < 0.5 * np.median(errors["mean"])
    assert np.median(errors["model"]) < 0.09
    assert np.mean(covered) >= 0.75  # nominal 90%


def test_other_units_follow_the_seen_ratio_to_energy(model: TrialCostModel) -> None:
    sweep = _sweep(5.0, 12, 7)
    done = [Cost(energy_j=c, co2e_g=c * 1e-4, usd=c * 2e-7) for _, c in sweep[:10]]
    f = forecast_sweep(done, n_total=30, cost_model=model, params=[p for p, _ in sweep[:10]])
    assert f.remaining.co2e_g == pytest.approx(f.remaining.energy_j * 1e-4)
    assert f.high.usd == pytest.approx(f.high.energy_j * 2e-7)
    assert f.low.energy_j < f.total.energy_j < f.high.energy_j


def test_fit_from_a_ledger_skips_the_new_study_and_partial_trials(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    for study, scale in (("old-a", 1.0), ("old-b", 20.0), ("new", 5.0)):
        for number, (p, joules) in enumerate(_sweep(scale, 30, len(study) + int(scale))):
            w = ledger.open_window(study, f"{study}:{number}", trial_number=number, params=p)
            status = "pruned" if number % 5 == 0 else "complete"  # partial: not learned from
            m = Measurement(1.0, {"gpu": joules}, {"gpu": Source.MEASURED})
            ledger.finalize(w, m, status=status)
    m = TrialCostModel.from_ledger(ledger, exclude=["new"], params=SPACE)
    assert m.n_studies == 2 and m.n_trials == 48  # 2 x 24 complete rows
    # the width matters, the learning rate does not: f ranks configurations by cost
    cheap, dear = (
        dict(batch=512, units=64, layers=1, lr=0.01, opt="sgd"),
        dict(batch=16, units=1024, layers=5, lr=0.01, opt="adam"),
    )
    assert m.shape([dear])[0] - m.shape([cheap])[0] > math.log(10)


@pytest.mark.parametrize(
    ("studies", "match"),
    [
        ({"only": _sweep(1.0, 50, 0)}, "at least 2 earlier studies"),
        ({"a": _sweep(1.0, 5, 0), "b": _sweep(1.0, 5, 1)}, "30 finished trials"),
        (
            {"a": [({}, 1.0 + i) for i in range(20)], "b": [({}, 2.0 + i) for i in range(20)]},
            "no parameter that varies",
        ),
    ],
)
def test_too_little_history_is_a_clear_error(studies: dict, match: str) -> None:
    with pytest.raises(HpauditInputError, match=match):
        TrialCostModel.fit(studies)


def test_model_needs_the_params_and_energy_of_the_seen_trials(model: TrialCostModel) -> None:
    with pytest.raises(HpauditInputError, match="params of every finished trial"):
        forecast_sweep([1.0, 2.0], n_total=10, cost_model=model, params=[{}])
    with pytest.raises(HpauditInputError, match="energy of every finished trial"):
        forecast_sweep([0.0, 2.0], n_total=10, cost_model=model, params=[{}, {}])


def test_forecast_from_ledger_entries_with_the_model(model: TrialCostModel, tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    for number, (p, joules) in enumerate(_sweep(37.0, 10, 5)):
        w = ledger.open_window("new", f"new:{number}", trial_number=number, params=p)
        status = "pruned" if number == 9 else "complete"
        ledger.finalize(
            w, Measurement(1.0, {"gpu": joules}, {"gpu": Source.MEASURED}), status=status
        )
    rows = ledger.entries(study="new")
    with pytest.raises(HpauditInputError, match="all train to the end"):
        forecast_sweep_from_entries(rows, 100, cost_model=model)
    done = rows[rows["status"] == "complete"]
    f = forecast_sweep_from_entries(done, 100, cost_model=model, space=draw_params(SPACE, 500))
    direct = forecast_sweep(
        done["energy_j"].tolist(),
        n_total=100,
        cost_model=model,
        params=list(done["params"]),
        space=draw_params(SPACE, 500),
    )
    assert f.total.energy_j == pytest.approx(direct.total.energy_j)
    assert f.method.startswith("cost model")


# -- a sweep's own model (no earlier sweeps) ---------------------------------------------------


def test_own_sweep_model_beats_the_mean_of_its_first_trials() -> None:
    # 10% seen, nothing earlier: the model is learned from those 20 trials alone
    errors, covered, methods = _forecasts(TrialCostModel.from_sweep, 20, 200, 2000)
    assert all(m.startswith("cost model of this sweep's 20 trials") for m in methods)
    assert np.median(errors["model"]) < 0.7 * np.median(errors["mean"])
    assert np.median(errors["model"]) < 0.08
    assert np.mean(covered) >= 0.75  # nominal 90%


def test_own_sweep_model_learns_the_shape_and_is_marked_as_such() -> None:
    m = TrialCostModel.from_sweep(_sweep(3.0, 60, 11))
    assert m.own_sweep and m.n_studies == 1 and m.n_trials == 60
    cheap = dict(batch=512, units=64, layers=1, lr=0.01, opt="sgd")
    dear = dict(batch=16, units=1024, layers=5, lr=0.01, opt="adam")
    assert m.shape([dear])[0] - m.shape([cheap])[0] > math.log(3)
    assert "this sweep's 60 trials" in m.describe()
    # its shape is learned from the same trials as its scale: the mean is less certain than
    # the scale alone says, and more trials make it more certain
    space = draw_params(SPACE, 500, seed=5)
    assert m.log_mean_sd(60, space) > m.noise_sd / math.sqrt(60)
    more = TrialCostModel.from_sweep(_sweep(3.0, 240, 11))
    assert more.log_mean_sd(240, space) < 0.7 * m.log_mean_sd(60, space)


def test_own_sweep_model_of_cost_the_params_do_not_explain_is_a_plain_mean() -> None:
    spreads = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        trials = [(p, float(rng.lognormal(5.0, 0.3))) for p in draw_params(SPACE, 40, seed=seed)]
        m = TrialCostModel.from_sweep(trials)
        spreads.append(float(np.ptp(m.shape(draw_params(SPACE, 200, seed=99)))))
        mean, _ = m.mean_cost([p for p, _ in trials], [c for _, c in trials])
        assert mean == pytest.approx(np.mean([c for _, c in trials]), rel=0.1)
    # noise: the held-out choice keeps (nearly) no shape in most sweeps
    assert np.median(spreads) < 0.2


def test_own_sweep_model_needs_more_trials_than_parameters() -> None:
    # 5 inputs (batch, units, layers, lr, opt=adam): 8 trials at least
    TrialCostModel.from_sweep(_sweep(1.0, 8, 0))
    with pytest.raises(HpauditInputError, match=r"needs at least 8 finished trials .* got 7"):
        TrialCostModel.from_sweep(_sweep(1.0, 7, 0))
    with pytest.raises(HpauditInputError, match="got 0"):
        TrialCostModel.from_sweep([({"a": 1.0}, 0.0)] * 20)  # no cost recorded

"""BudgetStopper and BudgetScheduler: a binding budget, held within the documented bound."""

from __future__ import annotations

import time

import pytest
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from hpsearch_budget.budget import Budget
from hpsearch_budget.errors import BudgetExceededError, HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.ray import (
    BudgetScheduler,
    BudgetStopper,
    CostAwareASHAScheduler,
    LedgerCallback,
    metered,
)
from hpsearch_budget.units import j_to_kwh

pytestmark = pytest.mark.ray

STEP_J = 10.0  # every report of every trial costs this much
STEPS = 10  # reports of a complete trial
LIMIT_J = 350.0  # three complete trials and a half
CONCURRENT = 2  # trials running at once (2 CPUs)


def _train(trace):
    def train(config):
        for step in range(STEPS):
            trace.burn(STEP_J)
            tune.report({"loss": config["q"] + 1.0 / (step + 1)})

    return train


def _check_bound(ledger: Ledger, study: str, trace) -> None:
    spent = ledger.spent(Scope(study=study)).energy_j
    assert spent == pytest.approx(trace.total())  # the ledger saw every joule, once
    # documented bound: at most one report interval of each running trial past the limit
    assert spent <= LIMIT_J + CONCURRENT * STEP_J
    assert spent >= LIMIT_J - STEPS * STEP_J  # it did use the budget, not stop at once
    rows = ledger.entries(study)
    assert set(rows["status"]) <= {"complete", "pruned"}
    assert (rows["status"] == "running").sum() == 0


def test_stopper_keeps_a_binding_budget(ray_local, trace, sqlite_url, make_run_config):
    ledger = Ledger(sqlite_url)
    stopper = BudgetStopper(Budget(energy_kwh=j_to_kwh(LIMIT_J)), ledger, max_steps=STEPS)
    grid = tune.Tuner(
        metered(_train(trace), ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0.1 * i for i in range(8)])},
        # reused actors: the next trial starts in the worker of a stopped one (Tune resets it)
        tune_config=tune.TuneConfig(max_concurrent_trials=CONCURRENT, reuse_actors=True),
        run_config=make_run_config("stop", stop=stopper, callbacks=[LedgerCallback(ledger)]),
    ).fit()
    assert not grid.errors
    _check_bound(ledger, "stop", trace)
    assert stopper.stopped  # some trial's forecast no longer fitted
    assert stopper.stop_all()  # and the sweep was ended: the budget is exhausted


def test_scheduler_wraps_asha_and_keeps_a_binding_budget(
    ray_local, trace, sqlite_url, make_run_config
):
    ledger = Ledger(sqlite_url)
    scheduler = BudgetScheduler(
        Budget(energy_kwh=j_to_kwh(LIMIT_J)),
        ledger,
        base=ASHAScheduler(max_t=STEPS, grace_period=STEPS, reduction_factor=2),
    )
    assert scheduler.guard.forecaster.expected_steps() == STEPS  # learnt from ASHA's max_t
    grid = tune.Tuner(
        metered(_train(trace), ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0.1 * i for i in range(8)])},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", scheduler=scheduler, max_concurrent_trials=CONCURRENT
        ),
        run_config=make_run_config("sched", callbacks=[LedgerCallback(ledger)]),
    ).fit()
    assert not grid.errors
    _check_bound(ledger, "sched", trace)
    # admission: once a trial's cost was known, trials that could not fit never started
    assert len(trace.per_trial()) < 8
    assert "Budget" in scheduler.debug_string()


def test_scheduler_ends_the_sweep_only_when_no_trial_fits(
    ray_local, trace, sqlite_url, make_run_config
):
    """ASHA stops trials early; their workers release their reservations a moment later. The
    sweep must not end in that moment while another trial would still fit."""
    ledger = Ledger(sqlite_url)
    scheduler = BudgetScheduler(
        Budget(energy_kwh=j_to_kwh(LIMIT_J)),
        ledger,
        base=ASHAScheduler(max_t=STEPS, grace_period=2, reduction_factor=2),
    )
    grid = tune.Tuner(
        metered(_train(trace), ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0.05 * i for i in range(30)])},
        tune_config=tune.TuneConfig(
            metric="loss", mode="min", scheduler=scheduler, max_concurrent_trials=CONCURRENT
        ),
        run_config=make_run_config("early", callbacks=[LedgerCallback(ledger)]),
    ).fit()
    assert not grid.errors
    spent = ledger.spent(Scope(study="early")).energy_j
    assert spent <= LIMIT_J + CONCURRENT * STEP_J
    # Trials admitted only to be stopped at their first report waste it: at most a couple
    # (a trial admitted on room a stopped one was about to release, not yet released).
    assert sum(1 for j in trace.per_trial().values() if j <= STEP_J) <= CONCURRENT
    if len(trace.per_trial()) < 30:  # it ended before every trial ran: none fitted any more
        left = LIMIT_J - spent
        assert left < scheduler.guard.forecaster.new_trial().energy_j, (spent, left)


def test_scheduler_stops_the_least_promising_first(
    ray_local, trace, sqlite_url, tmp_path, make_run_config
):
    # Two trials share a budget that fits one of them; the worse one (higher loss) must go.
    ledger = Ledger(sqlite_url)
    barrier = tmp_path / "barrier"
    barrier.mkdir()

    def train(config):
        # both start together, so neither is far ahead when the budget runs short
        (barrier / str(config["q"])).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for step in range(STEPS):
            time.sleep(0.1)  # steps of real length: neither runs many reports ahead
            trace.burn(STEP_J)
            tune.report({"loss": config["q"] + 1.0 / (step + 1)})

    scheduler = BudgetScheduler(
        Budget(energy_kwh=j_to_kwh(STEPS * STEP_J * 1.7)), ledger, max_steps=STEPS
    )
    # max_steps known: both start at once and reserve their remaining cost from report one.
    grid = tune.Tuner(
        metered(train, ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0.0, 5.0])},
        tune_config=tune.TuneConfig(metric="loss", mode="min", scheduler=scheduler),
        run_config=make_run_config("lp"),
    ).fit()
    assert not grid.errors
    by_q = {r.config["q"]: r.metrics for r in grid}
    assert by_q[0.0]["training_iteration"] == STEPS  # the promising one finished
    assert by_q[5.0]["training_iteration"] < STEPS  # the other was stopped for the budget
    assert ledger.spent(Scope(study="lp")).energy_j <= STEPS * STEP_J * 1.7 + 2 * STEP_J


def test_optuna_search_with_the_same_pieces(ray_local, trace, sqlite_url, make_run_config):
    ledger = Ledger(sqlite_url)
    budget = Budget(energy_kwh=j_to_kwh(LIMIT_J))
    grid = tune.Tuner(
        metered(_train(trace), ledger, meter=trace.meter, metric="loss"),
        param_space={"q": tune.uniform(0.0, 1.0)},
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            num_samples=8,
            search_alg=OptunaSearch(seed=0),
            scheduler=BudgetScheduler(budget, ledger),
            max_concurrent_trials=CONCURRENT,
        ),
        run_config=make_run_config(
            "optuna", stop=BudgetStopper(budget, ledger), callbacks=[LedgerCallback(ledger)]
        ),
    ).fit()
    assert not grid.errors
    _check_bound(ledger, "optuna", trace)
    rows = ledger.entries("optuna")
    assert all(0.0 <= p["q"] <= 1.0 for p in rows["params"])  # Optuna's suggestions recorded


def test_budget_already_spent_is_refused_before_start(
    ray_local, trace, sqlite_url, make_run_config
):
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("spent", "spent:old")
    ledger.finalize(
        w, Measurement(1.0, {"replay": 2 * LIMIT_J}, {"replay": Source.REPLAYED}), status="complete"
    )
    before = ledger.entries("spent")
    budget = Budget(energy_kwh=j_to_kwh(LIMIT_J))

    with pytest.raises(BudgetExceededError, match="already spent"):
        BudgetScheduler(budget, ledger, study="spent")
    with pytest.raises(BudgetExceededError, match="already spent"):
        BudgetStopper(budget, ledger, study="spent")
    # Without study=, the first trial tells the scheduler the experiment name: refused there.
    with pytest.raises(Exception, match="already spent"):
        tune.Tuner(
            metered(_train(trace), ledger, meter=trace.meter),
            tune_config=tune.TuneConfig(scheduler=BudgetScheduler(budget, ledger)),
            run_config=make_run_config("spent"),
        ).fit()
    assert trace.per_trial() == {}  # no trial ran
    after = ledger.entries("spent")
    assert after["row_hash"].tolist() == before["row_hash"].tolist()  # nothing lost or added
    assert ledger.verify("spent").ok

    # A stopper without study= learns the study at the first result: each trial stops at its
    # first report and the sweep ends, with the reason kept (no Tune traceback, no rerun).
    stopper = BudgetStopper(budget, ledger)
    grid = tune.Tuner(
        metered(_train(trace), ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0.1 * i for i in range(6)])},
        tune_config=tune.TuneConfig(max_concurrent_trials=CONCURRENT),
        run_config=make_run_config("spent", stop=stopper),
    ).fit()
    assert not grid.errors and stopper.stop_all()
    assert all(j == STEP_J for j in trace.per_trial().values())  # one report each, at most
    assert len(trace.per_trial()) <= CONCURRENT  # the sweep ended: no trial started after
    assert all("already spent" in why for why in stopper.reasons.values()) and stopper.reasons


def test_bad_budget_arguments(sqlite_url):
    ledger = Ledger(sqlite_url)
    with pytest.raises(HpauditInputError, match="Budget"):
        BudgetStopper({"energy_kwh": 1.0}, ledger)  # type: ignore[arg-type]
    with pytest.raises(HpauditInputError, match="Ledger"):
        BudgetScheduler(Budget(energy_kwh=1.0), sqlite_url)  # type: ignore[arg-type]
    with pytest.raises(HpauditInputError, match="TrialScheduler"):
        BudgetScheduler(Budget(energy_kwh=1.0), ledger, base="asha")  # type: ignore[arg-type]


def test_scheduler_refuses_schedulers_that_pause_trials(sqlite_url):
    """HyperBand and PBT pause trials: under a binding budget a paused trial waited for a
    bracket the budget never let fill, and the sweep hung (a 9-trial HyperBand sweep ran 3
    trials, then nothing until Tune's time limit). Refused up front, with the way out."""
    from ray.tune.schedulers import HyperBandScheduler, PopulationBasedTraining

    budget = Budget(energy_kwh=j_to_kwh(LIMIT_J))
    pbt = PopulationBasedTraining(hyperparam_mutations={"q": [0.1, 0.2]})
    for base in (HyperBandScheduler(max_t=STEPS), pbt):
        with pytest.raises(HpauditInputError, match=r"pauses trials.*use ASHAScheduler"):
            BudgetScheduler(budget, Ledger(sqlite_url), base=base)


def test_scheduler_gives_its_metric_to_a_base_without_one(
    ray_local, trace, sqlite_url, make_run_config
):
    # metric / mode given to the BudgetScheduler only (not TuneConfig): the wrapped cost-aware
    # ASHA ranks by them too, rather than failing the run at the first result.
    ledger = Ledger(sqlite_url)
    base = CostAwareASHAScheduler(max_t=STEPS, min_t=1, reduction_factor=3)
    scheduler = BudgetScheduler(
        Budget(energy_kwh=1.0), ledger, base=base, metric="loss", mode="min"
    )
    grid = tune.Tuner(
        metered(_train(trace), ledger, meter=trace.meter),
        param_space={"q": tune.grid_search([0.0, 0.1, 0.2, 0.3])},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
        run_config=make_run_config("forward"),
    ).fit()
    assert not grid.errors
    iterations = {r.config["q"]: r.metrics["training_iteration"] for r in grid}
    assert iterations[0.0] == STEPS
    assert iterations[0.3] == 1  # the worst of 4 at rung 1: stopped by the base

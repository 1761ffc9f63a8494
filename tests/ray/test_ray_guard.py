"""The driver-side budget logic shared by BudgetStopper and BudgetScheduler (no Ray needed)."""

from __future__ import annotations

import pickle

import pytest

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.policy import Policy
from hpsearch_budget.ray._guard import BudgetGuard
from hpsearch_budget.units import j_to_kwh

SRC = Source.REPLAYED


def _window(ledger: Ledger, study: str, key: str, joules: float, project: str | None = None):
    w = ledger.open_window(study, key, project=project)
    ledger.checkpoint(w, Measurement(1.0, {"replay": joules}, {"replay": Source.REPLAYED}))
    return w


def _result(window: int, joules: float, iteration: int, study: str = "s") -> dict:
    return {
        "hpaudit_window": window,
        "hpaudit_study": study,
        "energy_j": joules,
        "training_iteration": iteration,
    }


def test_reserves_the_forecast_and_refuses_what_does_not_fit(sqlite_url):
    ledger = Ledger(sqlite_url)
    guard = BudgetGuard(Budget(energy_kwh=j_to_kwh(100.0)), ledger, study="s", max_steps=10)
    w1 = _window(ledger, "s", "s:1", 10.0)
    assert guard.on_result("t1", _result(w1, 10.0, 1), "test")
    # 10 J per step, 9 steps to go: 90 J reserved on top of the 10 J spent
    assert ledger.committed(Scope(study="s")).energy_j == pytest.approx(90.0)

    # the same result seen again (a stopper and a scheduler together): nothing reserved twice
    twin = BudgetGuard(Budget(energy_kwh=j_to_kwh(100.0)), ledger, study="s", max_steps=10)
    assert twin.on_result("t1", _result(w1, 10.0, 1), "test")
    assert ledger.committed(Scope(study="s")).energy_j == pytest.approx(90.0)

    w2 = _window(ledger, "s", "s:2", 10.0)
    assert not guard.on_result("t2", _result(w2, 10.0, 1), "test")  # 20 + 90 + 90 > 100
    assert ledger.committed(Scope(study="s")).energy_j == pytest.approx(90.0)

    # later reports: the forecast follows the trial's own rate (8 J/step, 5 steps to go)
    ledger.checkpoint(w1, Measurement(5.0, {"replay": 40.0}, {"replay": Source.REPLAYED}))
    assert guard.on_result("t1", _result(w1, 40.0, 5), "test")  # inside its 100 J
    # a reservation never shrinks before the window ends: 100 held - 40 spent
    assert ledger.committed(Scope(study="s")).energy_j == pytest.approx(60.0)
    # ...until the trial outgrows it: 90 J after 6 steps, 4 x 15 J to go, 10 J of t2 spent
    ledger.checkpoint(w1, Measurement(6.0, {"replay": 90.0}, {"replay": Source.REPLAYED}))
    assert not guard.on_result("t1", _result(w1, 90.0, 6), "test")


def test_exhausted_once_spent_or_when_no_trial_can_fit(sqlite_url):
    ledger = Ledger(sqlite_url)
    budget = Budget(energy_kwh=j_to_kwh(100.0))
    guard = BudgetGuard(budget, ledger, study="s", max_steps=10, ttl_s=0)
    assert not guard.exhausted()
    w = _window(ledger, "s", "s:1", 60.0)
    ledger.finalize(w, Measurement(6.0, {"replay": 60.0}, {"replay": SRC}), status="complete")
    guard.forecaster.observe(Cost(energy_j=60.0), 6)
    assert not guard.exhausted()  # 40 J left, but no trial was refused yet
    guard.refused = 1
    assert guard.exhausted()  # a trial is forecast at 60 J, nothing running could free room
    assert not BudgetGuard(budget, ledger, max_steps=10).exhausted()  # no study: no verdict
    _window(ledger, "s", "s:2", 45.0)
    assert guard.over()  # 105 J spent of 100


def test_policy_cap_of_the_project_binds_across_studies(sqlite_url):
    ledger = Ledger(sqlite_url)
    _window(ledger, "other", "other:1", 95.0, project="nlp")  # another sweep of the project
    policy = Policy.model_validate({"caps": {"project": {"energy_kwh": j_to_kwh(100.0)}}})
    guard = BudgetGuard(
        Budget(energy_kwh=1.0), ledger, study="s", policy=policy, project="nlp", user="ana", ttl_s=0
    )
    assert len(guard.limits) == 2
    w = _window(ledger, "s", "s:1", 10.0, project="nlp")
    assert not guard.on_result("t1", _result(w, 10.0, 1), "test")  # 105 J > the 100 J cap


def test_the_stopper_ending_the_sweep_names_the_limit_that_ran_out(sqlite_url, caplog):
    from hpsearch_budget.ray import BudgetStopper

    ledger = Ledger(sqlite_url)
    policy = Policy.model_validate({"caps": {"project": {"energy_kwh": j_to_kwh(100.0)}}})
    stopper = BudgetStopper(
        Budget(energy_kwh=1.0), ledger, study="s", policy=policy, project="nlp", user="ana"
    )
    stopper.guard.ttl_s = 0.0
    assert not stopper.stop_all()
    _window(ledger, "other", "other:1", 120.0, project="nlp")  # another sweep spent the cap
    with caplog.at_level("INFO", logger="hpsearch_budget.ray._stopper"):
        assert stopper.stop_all()
    assert "the project 'nlp' monthly energy cap is spent" in caplog.text, caplog.text


def test_bad_results_are_refused_with_the_fix(sqlite_url):
    ledger = Ledger(sqlite_url)
    guard = BudgetGuard(Budget(energy_kwh=1.0), ledger, study="s")
    with pytest.raises(HpauditInputError, match=r"metered\(train, ledger\)"):
        guard.on_result("t1", {"loss": 1.0, "trial_id": "t1"}, "BudgetStopper")
    w = _window(ledger, "elsewhere", "elsewhere:1", 1.0)
    with pytest.raises(HpauditInputError, match="same study="):
        guard.on_result("t1", _result(w, 1.0, 1, study="elsewhere"), "BudgetStopper")


def test_budget_pieces_survive_the_pickling_of_tuner_restore(sqlite_url):
    # Tuner.restore unpickles the scheduler, the stopper and the callbacks it saved.
    from ray.tune.schedulers import ASHAScheduler

    from hpsearch_budget.ray import BudgetScheduler, BudgetStopper, LedgerCallback

    ledger = Ledger(sqlite_url)
    w = _window(ledger, "s", "s:1", 10.0)
    scheduler = BudgetScheduler(Budget(energy_kwh=1.0), ledger, base=ASHAScheduler(max_t=7))
    assert scheduler.guard.on_result("t1", _result(w, 10.0, 1), "test")
    for piece in (scheduler, BudgetStopper(Budget(usd=1.0), ledger), LedgerCallback(ledger)):
        clone = pickle.loads(pickle.dumps(piece))
        assert type(clone) is type(piece)
    clone = pickle.loads(pickle.dumps(scheduler))
    assert clone.guard.windows == {}  # the old run's windows are dead after a restore
    assert clone.guard.study == "s" and clone.guard.forecaster.expected_steps() == 7
    assert clone.guard.ledger.url == ledger.url


def test_a_ledger_failure_that_ended_the_sweep_does_not_end_its_restore(sqlite_url):
    """The stop reason of a final write that failed says "fix the ledger, then Tuner.restore":
    the restored stopper (unpickled, as Tuner.restore does) must let the sweep run again, while
    a policy cap that stopped it (on_exceed = "stop") still stops it after the restore."""
    from hpsearch_budget.ray import BudgetStopper
    from hpsearch_budget.ray._metered import LEDGER_FINAL_ERROR_KEY

    ledger = Ledger(sqlite_url)
    stopper = BudgetStopper(Budget(energy_kwh=1.0), ledger, study="s", policy=False)
    w = _window(ledger, "s", "s:1", 10.0)
    failed = {**_result(w, 10.0, 2), LEDGER_FINAL_ERROR_KEY: "database is locked"}
    assert stopper.guard.on_result("t1", failed, "test")
    assert stopper.stop_all()  # the ledger is incomplete: this run ends
    restored = pickle.loads(pickle.dumps(stopper))
    assert restored.guard.stop_reason is None
    assert not restored.stop_all()  # the ledger was fixed: the restored sweep runs on

    policy = Policy.model_validate(
        {"on_exceed": "stop", "caps": {"project": {"energy_kwh": j_to_kwh(100.0)}}}
    )
    capped = BudgetStopper(Budget(energy_kwh=1.0), ledger, study="s", policy=policy, project="p")
    _window(ledger, "other", "other:1", 120.0, project="p")  # another sweep spent the cap
    capped.guard.ttl_s = 0.0
    capped.guard.refuse("t2")
    assert capped.guard.stop_reason is not None and capped.stop_all()
    assert pickle.loads(pickle.dumps(capped)).stop_all()  # the cap still holds

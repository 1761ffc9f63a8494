"""A sweep still running when the calendar month (UTC) turns: its project and user caps are
those of the new month from then on, not the month it started in. Real Optuna, real SQLite
ledgers, a replay meter; only the clock is set (the ledger's and the policy's)."""

from __future__ import annotations

from datetime import UTC, datetime

import optuna
import pytest
from optuna.trial import TrialState

import hpsearch_budget.ledger._ledger as ledger_module
import hpsearch_budget.policy._enforce as enforce_module
from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, ReplayMeter, Source
from hpsearch_budget.optuna import BudgetPruner, optimize
from hpsearch_budget.policy import Policy
from hpsearch_budget.units import j_to_kwh

JAN_END = datetime(2027, 1, 31, 23, 59, 50, tzinfo=UTC).timestamp()
FEB_START = datetime(2027, 2, 1, 0, 0, 5, tzinfo=UTC).timestamp()  # 15 s later
CAP_J = 100.0
BIG = Budget(energy_kwh=1.0)  # the study's own budget never binds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    """One clock for the ledger and the policy's calendar months: set ``clock["t"]``."""
    for name in ("HPAUDIT_POLICY", "HPAUDIT_PROJECT", "HPAUDIT_USER", "HPAUDIT_LEDGER"):
        monkeypatch.delenv(name, raising=False)
    now = {"t": JAN_END}
    monkeypatch.setattr(ledger_module, "_now", lambda: now["t"])
    monkeypatch.setattr(enforce_module, "_now", lambda: datetime.fromtimestamp(now["t"], UTC))
    return now


def _policy(on_exceed: str) -> Policy:
    return Policy.model_validate(
        {"on_exceed": on_exceed, "caps": {"user": {"energy_kwh": j_to_kwh(CAP_J)}}}
    )


def _spend(url: str, study: str, joules: float) -> None:
    """Another sweep of user 'ana' spends ``joules`` now."""
    with Ledger(url) as other:
        w = other.open_window(study, f"{study}:0", user="ana")
        m = Measurement(1.0, {"replay": joules}, {"replay": Source.REPLAYED})
        other.finalize(w, m, status="complete")


def test_optuna_trials_in_a_new_month_are_judged_by_its_cap(sqlite_url, clock):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    meter = ReplayMeter(power_w=20.0)  # 10 J a step

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        for step in range(3):
            meter.advance(0.5)
            trial.report(x**2, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        if trial.number == 0:  # January ends with the user's cap spent by another sweep
            _spend(sqlite_url, "other", 80.0)
            clock["t"] = FEB_START
        return x**2

    policy = _policy("stop")
    pruner = BudgetPruner(BIG, sqlite_url, policy=policy, user="ana", ttl_s=0.0)
    study = optuna.create_study(study_name="s", pruner=pruner)
    run = optimize(
        study,
        objective,
        budget=BIG,
        ledger=sqlite_url,
        meter=meter,
        policy=policy,
        user="ana",
        n_trials=2,
    )
    # January: 30 J of this sweep + 80 J of the other one, over the 100 J cap; February: the
    # second trial's 30 J, which its fresh cap pays for.
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert run.stopped is None
    feb = Scope(user="ana", since=datetime(2027, 2, 1, tzinfo=UTC))
    assert Ledger(sqlite_url).spent(feb).energy_j == pytest.approx(30.0)


def test_ray_guard_reserves_under_the_new_months_cap(sqlite_url, clock):
    # Imported here: the Optuna tests of this file run without the ray extra.
    pytest.importorskip("ray.tune", reason="ray[tune] not installed: pip install -e '.[ray]'")
    from hpsearch_budget.ray._guard import BudgetGuard

    ledger = Ledger(sqlite_url)
    _spend(sqlite_url, "other", 50.0)
    guard = BudgetGuard(
        BIG, ledger, study="s", policy=_policy("stop"), user="ana", max_steps=5, ttl_s=0
    )
    _spend(sqlite_url, "other-2", 60.0)  # January's cap is now spent (110 J of 100)
    clock["t"] = FEB_START
    w = ledger.open_window("s", "s:1", user="ana")
    ledger.checkpoint(w, Measurement(1.0, {"replay": 10.0}, {"replay": Source.REPLAYED}))
    result = {"hpaudit_window": w, "hpaudit_study": "s", "energy_j": 10.0, "training_iteration": 1}
    # February: 10 J spent, 4 x 10 J to go, all inside the fresh 100 J cap
    assert guard.on_result("t1", result, "test"), guard.last_refusal
    assert guard.stop_reason is None
    feb = Scope(user="ana", since=datetime(2027, 2, 1, tzinfo=UTC))
    assert ledger.committed(feb).energy_j == pytest.approx(40.0)


def test_warn_watches_the_new_months_cap(sqlite_url, clock):
    from hpsearch_budget.policy._sweep import CapWarner

    warner = CapWarner(Ledger(sqlite_url), _policy("warn"), "s", user="ana", ttl_s=0.0)
    assert warner.check() == []
    clock["t"] = FEB_START
    _spend(sqlite_url, "other", 120.0)  # February's cap passed
    (message,) = warner.check()
    assert "passed the user 'ana' monthly energy cap" in message


def test_warn_warns_again_when_the_new_month_passes_its_cap(sqlite_url, clock):
    """A cap warned about in January is a new cap in February: passing it warns again."""
    from hpsearch_budget.policy._sweep import CapWarner

    warner = CapWarner(Ledger(sqlite_url), _policy("warn"), "s2", user="ana", ttl_s=0.0)
    _spend(sqlite_url, "other", 120.0)  # January's cap passed
    assert len(warner.check()) == 1
    assert warner.check() == []  # once per cap
    clock["t"] = FEB_START
    assert warner.check() == []  # nothing spent in February yet
    _spend(sqlite_url, "other", 120.0)  # February's cap passed
    (message,) = warner.check()
    assert "passed the user 'ana' monthly energy cap" in message

"""Enforcement against a real ledger: shared monthly caps, month rollover (UTC), admission."""

from __future__ import annotations

import itertools
import logging
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.errors import BudgetExceededError, HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.policy import Policy, month_bounds

# 500 g CO2e per kWh and PUE 1: one device-kWh costs exactly 0.5 kg, so figures are easy to read.
CAPS = """
[defaults]
g_per_kwh = 500
pue = 1.0

[caps.project]
co2e_kg = 1.0

[caps.users.zoe]
co2e_kg = 0
"""
_keys = itertools.count()


@pytest.fixture
def policy():
    from hpsearch_budget.policy import parse_policy

    return parse_policy(CAPS, "hpaudit.toml")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, policy):
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    with Ledger(url, carbon=policy.carbon_model()) as opened:
        yield opened


def spend(ledger: Ledger, study: str, kwh: float, project: str, user: str = "ana") -> None:
    window = ledger.open_window(study, f"{study}:{next(_keys)}", project=project, user=user)
    m = Measurement(60.0, {"cpu": kwh * 3.6e6}, {"cpu": Source.ESTIMATED})
    ledger.finalize(window, m, status="complete")


def kg(value: float) -> Cost:
    return Cost(co2e_g=value * 1000.0)


def test_month_bounds_are_utc_calendar_months():
    start, end = month_bounds(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    # Naive means UTC; another zone is converted first (22:00 in New York is 03:00 UTC).
    assert month_bounds(datetime(2026, 2, 28, 23, 0))[1] == datetime(2026, 3, 1, tzinfo=UTC)
    eastern = timezone(timedelta(hours=-5))
    assert month_bounds(datetime(2026, 11, 30, 22, 0, tzinfo=eastern))[0].month == 12


def test_limits_for_gives_scopes_limits_and_names(policy):
    now = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    limits = policy.limits_for("bert", "nlp", "ana", now, budget=Budget(gpu_hours=2))
    (b_scope, b_limit, b_name), (p_scope, p_limit, p_name) = limits
    assert b_scope == Scope(study="bert") and b_name == "study 'bert' budget"
    assert b_limit.gpu_s == 7200.0 and math.isinf(b_limit.co2e_g)
    assert p_name == "project 'nlp' monthly CO2e cap"
    assert p_scope == Scope(
        project="nlp",
        since=datetime(2026, 11, 1, tzinfo=UTC),
        until=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert p_limit.co2e_g == 1000.0 and math.isinf(p_limit.energy_j)
    # A named user's cap applies to that user only.
    names = [name for _, _, name in policy.limits_for("bert", "nlp", "zoe", now)]
    assert names == ["project 'nlp' monthly CO2e cap", "user 'zoe' monthly CO2e cap"]


def test_two_studies_of_one_project_share_its_monthly_cap(policy, ledger):
    spend(ledger, "bert-lr", 1.6, "nlp")  # 0.8 kg of the project's 1 kg
    with pytest.raises(BudgetExceededError) as info:
        policy.admit(ledger, "bert-wd", "nlp", "bob", kg(0.3))
    message = str(info.value)
    assert "project 'nlp' monthly CO2e cap (1 kg CO2e) by 0.1 kg CO2e" in message
    assert "only 0.2 kg CO2e remain" in message and "(estimate)" in message
    admitted = policy.admit(ledger, "bert-wd", "nlp", "bob", kg(0.15))
    assert admitted.fits and admitted.binding == "project 'nlp' monthly CO2e cap"
    assert math.isclose(admitted.remaining.co2e_g, 200.0)
    # Another project's cap is untouched.
    assert policy.admit(ledger, "resnet", "cv", "bob", kg(0.9)).fits


def test_shared_cap_holds_under_atomic_reservations(policy, ledger):
    spend(ledger, "bert-lr", 1.6, "nlp")
    window = ledger.open_window("bert-wd", "bert-wd:0", project="nlp", user="bob")
    limits = [(s, c) for s, c, _ in policy.limits_for("bert-wd", "nlp", "bob")]
    assert not ledger.try_reserve(window, kg(0.3), limits)
    assert ledger.try_reserve(window, kg(0.15), limits)
    # A third study of the project sees what the second one reserved.
    other = ledger.open_window("bert-do", "bert-do:0", project="nlp", user="ana")
    other_limits = [(s, c) for s, c, _ in policy.limits_for("bert-do", "nlp", "ana")]
    assert not ledger.try_reserve(other, kg(0.1), other_limits)
    assert ledger.try_reserve(other, kg(0.04), other_limits)
    with pytest.raises(BudgetExceededError, match=r"0\.19 kg CO2e reserved by running trials"):
        policy.admit(ledger, "bert-xl", "nlp", "ana", kg(0.05))


def test_month_rollover_in_utc(policy, sqlite_url, monkeypatch):
    import hpsearch_budget.ledger._ledger as ledger_module

    clock = {"t": 0.0}
    monkeypatch.setattr(ledger_module, "_now", lambda: clock["t"])
    last_minute = datetime(2026, 10, 31, 23, 59, tzinfo=UTC)
    first_instant = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    with Ledger(sqlite_url, carbon=policy.carbon_model()) as ledger:
        clock["t"] = last_minute.timestamp()
        spend(ledger, "bert-lr", 1.8, "nlp")  # 0.9 kg, October
        clock["t"] = first_instant.timestamp()
        spend(ledger, "bert-wd", 0.4, "nlp")  # 0.2 kg, November
        clock["t"] = first_instant.timestamp() + 30
        ((oct_scope, _, _),) = policy.limits_for("s", "nlp", "ana", last_minute)
        ((nov_scope, _, _),) = policy.limits_for("s", "nlp", "ana", first_instant)
        assert math.isclose(ledger.spent(oct_scope).co2e_g, 900.0)
        assert math.isclose(ledger.spent(nov_scope).co2e_g, 200.0)
        with pytest.raises(BudgetExceededError, match=r"in 2026-10 .* resets on 2026-11-01"):
            policy.admit(ledger, "s", "nlp", "ana", kg(0.2), now=last_minute)
        admitted = policy.admit(ledger, "s", "nlp", "ana", kg(0.2), now=first_instant)
        assert admitted.fits and math.isclose(admitted.remaining.co2e_g, 800.0)


def test_study_budget_combines_with_policy_caps(policy, sqlite_url):
    with Ledger(sqlite_url, carbon=policy.carbon_model()) as ledger:
        spend(ledger, "bert-lr", 0.8, "nlp")  # 0.4 kg: the project cap has 0.6 kg left
        with pytest.raises(BudgetExceededError, match="study 'bert-lr' budget") as info:
            policy.admit(ledger, "bert-lr", "nlp", "ana", kg(0.2), Budget(co2e_kg=0.5))
        assert "by 0.1 kg CO2e" in str(info.value)
        assert policy.admit(ledger, "bert-lr", "nlp", "ana", kg(0.2), Budget(usd=5)).fits


def test_warn_logs_and_lets_the_sweep_run(sqlite_url, caplog):
    policy = Policy.model_validate(
        {"on_exceed": "warn", "caps": {"user": "1 kWh"}, "defaults": {"g_per_kwh": 500}}
    )
    with Ledger(sqlite_url, carbon=policy.carbon_model()) as ledger:
        spend(ledger, "bert-lr", 0.9, "nlp")
        with caplog.at_level(logging.WARNING, logger="hpsearch_budget.policy"):
            admission = policy.admit(ledger, "bert-wd", "nlp", "ana", Cost(energy_j=0.3 * 3.6e6))
    assert not admission.fits and admission.binding == "user 'ana' monthly energy cap"
    assert admission.binding_unit == "energy_kwh" and math.isclose(admission.over_by, 0.2)
    assert "would exceed the user 'ana' monthly energy cap" in caplog.text


def test_zero_cap_closes_and_bad_forecast_is_refused(policy, sqlite_url):
    with Ledger(sqlite_url, carbon=policy.carbon_model()) as ledger:
        with pytest.raises(BudgetExceededError, match="user 'zoe' monthly CO2e cap"):
            policy.admit(ledger, "s", "nlp", "zoe", kg(0.001))
        # Nothing left: refused even without a forecast (the integrations pass Cost()).
        with pytest.raises(BudgetExceededError, match=r"cannot start: .* is used up in 20"):
            policy.admit(ledger, "s", "nlp", "zoe", Cost())
        assert policy.admit(ledger, "s", "nlp", "ana", Cost()).fits
        # A cap already passed: "used up", not "would exceed ... lower n_trials"
        spend(ledger, "past", 3.0, "vision")  # 1.5 kg CO2e: past the 1 kg project cap
        with pytest.raises(BudgetExceededError, match=r"cannot start: .* is used up") as error:
            policy.admit(ledger, "s", "vision", "ana", Cost())
        assert "n_trials" not in str(error.value)
        with pytest.raises(HpauditInputError, match=r"forecast\.co2e_g must be"):
            policy.admit(ledger, "s", "nlp", "ana", Cost(co2e_g=-1.0))
        no_caps = Policy()
        admission = no_caps.admit(ledger, "s", "nlp", "ana", kg(1e6))
        assert admission.fits and admission.binding is None and admission.limits == []


def test_optuna_sweeps_of_one_project_share_the_cap(sqlite_url):
    """End to end through engineer G's optimize(policy=...): study 'a' uses up the project's
    monthly cap, so study 'b' of the same project is refused before its first trial."""
    optuna = pytest.importorskip("optuna")
    from hpsearch_budget.meters import ReplayMeter
    from hpsearch_budget.optuna import optimize

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    policy = Policy.model_validate(
        {"defaults": {"g_per_kwh": 500, "pue": 1.0}, "caps": {"project": "0.01 kWh"}}
    )
    meter = ReplayMeter(power_w=1000.0)

    def objective(trial):
        meter.advance(6.0)  # 6 kJ a trial: the 36 kJ cap holds six
        return trial.suggest_float("x", -1.0, 1.0) ** 2

    with Ledger(sqlite_url, carbon=policy.carbon_model()) as ledger:
        run_a = optimize(
            optuna.create_study(study_name="a"),
            objective,
            budget=Budget(energy_kwh=1.0),
            ledger=ledger,
            n_trials=20,
            policy=policy,
            project="nlp",
            user="ana",
            meter=meter,
        )
        assert run_a.n_complete < 20
        spent = ledger.spent(Scope(project="nlp")).energy_j
        assert spent <= 36_000.0 * (1 + 1e-9)
        with pytest.raises(BudgetExceededError, match="project 'nlp' monthly energy cap"):
            optimize(
                optuna.create_study(study_name="b"),
                objective,
                budget=Budget(energy_kwh=1.0),
                ledger=ledger,
                n_trials=5,
                policy=policy,
                project="nlp",
                user="bob",
                meter=meter,
            )
        assert ledger.studies() == ["a"]

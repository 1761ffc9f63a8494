"""A lab policy in a running Optuna sweep: found without being passed, opted out of, its
on_exceed modes (prune / stop / warn), its carbon defaults on the ledger rows, and a malformed
file refused before any trial runs. Real Optuna, real SQLite ledgers, a replay meter (exact
joules whatever the machine's load)."""

from __future__ import annotations

import contextlib
import logging
import re
import threading

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch_budget import Budget
from hpsearch_budget.carbon import CarbonModel, StaticIntensity
from hpsearch_budget.errors import BudgetExceededError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import ReplayMeter
from hpsearch_budget.optuna import BudgetCallback, BudgetPruner, metered, optimize
from hpsearch_budget.policy import InvalidPolicyError
from hpsearch_budget.units import j_to_kwh

WATTS = 20.0
STEP_S = 0.5  # one step of the objective: 10 J on the replay meter
STEP_J = WATTS * STEP_S
BIG = Budget(energy_kwh=1.0)  # the study's own budget never binds unless a test says so


# lab(toml), url and replay_objective come from tests/policy/conftest.py
pytestmark = pytest.mark.usefixtures("policy_env")


def _cap(name: str, joules: float) -> str:
    return f"[caps.{name}]\nenergy_kwh = {j_to_kwh(joules)!r}\n"


def test_a_discovered_cap_ends_the_sweep_and_is_named(lab, url, replay_objective):
    lab('on_exceed = "prune"\n' + _cap("project", 100.0))  # 3 trials of 30 J and a third
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name="found", pruner=optuna.pruners.NopPruner())
    sweep = replay_objective(meter)
    run = optimize(study, sweep, budget=BIG, ledger=url, meter=meter, project="nlp", n_trials=20)
    spent = Ledger(url).spent(Scope(project="nlp")).energy_j
    assert run.n_trials < 20
    assert spent <= 100.0 + STEP_J
    assert run.stopped is not None and "project 'nlp' monthly energy cap" in run.stopped
    # the summary shows how much of the cap that ended it was used, not only the budget's 0 %
    first = run.describe().splitlines()[0]
    assert f"{100 * spent / 100.0:.0f}% of the project 'nlp' monthly energy cap" in first


def test_policy_false_opts_out_of_the_lab_file(lab, url, replay_objective):
    lab('on_exceed = "stop"\n' + _cap("project", 100.0))
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name="optout", pruner=optuna.pruners.NopPruner())
    run = optimize(
        study,
        replay_objective(meter),
        budget=BIG,
        ledger=url,
        meter=meter,
        project="nlp",
        policy=False,
        n_trials=6,
    )
    assert run.n_complete == 6 and run.stopped is None
    assert Ledger(url).spent(Scope(project="nlp")).energy_j == pytest.approx(6 * 3 * STEP_J)
    assert BudgetPruner(BIG, url, policy=False).policy is None
    assert BudgetCallback(BIG, url).policy is not None  # None finds the file


@pytest.mark.parametrize("on_exceed", ["prune", "stop"])
def test_running_trials_crossing_a_cap(lab, url, on_exceed):
    """Two trials side by side (n_jobs=2) while the project cap pays for about one and a
    half: "prune" prunes the less promising one and lets the other complete; "stop" stops
    both at their next step and starts no new trial."""
    steps = 8
    trial_j = steps * STEP_J
    lab(f'on_exceed = "{on_exceed}"\n' + _cap("project", 1.75 * trial_j))
    meter = ReplayMeter(power_w=WATTS)
    barrier = threading.Barrier(2, timeout=10)

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        for step in range(steps):
            meter.advance(STEP_S)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # both spent before either reports: an even split per step
            trial.report(x**2 + 1.0 / (step + 1), step)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # both reported before either asks the pruner
            if trial.should_prune():
                barrier.abort()
                raise optuna.TrialPruned()
        barrier.abort()
        return x**2

    study = optuna.create_study(study_name=f"two-{on_exceed}", pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"x": 3.0})  # the less promising (minimising x^2)
    study.enqueue_trial({"x": 0.5})
    run = optimize(
        study,
        objective,
        budget=BIG,
        ledger=url,
        meter=meter,
        project="nlp",
        max_steps=steps,
        n_trials=2 if on_exceed == "prune" else 4,  # "stop": the 2 extra never start
        n_jobs=2,
    )
    by_x = {t.params["x"]: t for t in study.trials if "x" in t.params}
    worse, better = by_x[3.0], by_x[0.5]
    assert worse.state == TrialState.PRUNED
    assert "project 'nlp' monthly energy cap" in worse.user_attrs["hpaudit_prune_reason"]
    spent = Ledger(url).spent(Scope(project="nlp")).energy_j
    assert spent <= 1.75 * trial_j + 2 * STEP_J  # one step of each running trial past the cap
    if on_exceed == "prune":
        assert better.state == TrialState.COMPLETE
    else:
        assert better.state == TrialState.PRUNED
        assert "project 'nlp' monthly energy cap" in better.user_attrs["hpaudit_prune_reason"]
        assert all(t.state == TrialState.PRUNED for t in study.trials)
        assert len(study.trials) <= 3  # at most one trial asked to start while stopping
        assert run.stopped is not None and "project 'nlp'" in run.stopped


def test_warn_logs_each_cap_once_and_keeps_the_budget(lab, url, caplog, replay_objective):
    lab('on_exceed = "warn"\n' + _cap("project", 50.0) + _cap("users.ana", 60.0))
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name="warned", pruner=optuna.pruners.NopPruner())
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        run = optimize(
            study,
            replay_objective(meter),
            budget=Budget(energy_kwh=j_to_kwh(200.0)),  # still enforced
            ledger=url,
            meter=meter,
            project="nlp",
            user="ana",
            n_trials=20,
        )
    spent = Ledger(url).spent(Scope(study="warned")).energy_j
    assert 60.0 < spent <= 200.0 + STEP_J  # the caps did not stop it; the budget did
    assert run.n_trials < 20
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    project = [m for m in messages if "project 'nlp' monthly energy cap" in m]
    user = [m for m in messages if "user 'ana' monthly energy cap" in m]
    assert len(project) == 1 and len(user) == 1
    assert "by " in project[0] and "not enforced" in project[0]


def test_policy_defaults_charge_the_ledger_rows(lab, url, replay_objective):
    lab("[defaults]\ng_per_kwh = 500\npue = 1.0\n")
    meter = ReplayMeter(power_w=WATTS)
    optimize(
        optuna.create_study(study_name="grid", pruner=optuna.pruners.NopPruner()),
        replay_objective(meter),
        budget=BIG,
        ledger=url,
        meter=meter,
        n_trials=2,
    )
    rows = Ledger(url).entries("grid")
    assert list(rows["g_per_kwh"]) == pytest.approx([500.0] * len(rows))
    assert set(rows["pue"]) == {1.0}
    assert rows["co2e_g"].sum() == pytest.approx(j_to_kwh(rows["energy_j"].sum()) * 500.0)
    # A ledger with a carbon model of its own keeps it.
    own = Ledger(url, carbon=CarbonModel(StaticIntensity.of(100.0), pue=1.2))
    study = optuna.create_study(study_name="own", pruner=optuna.pruners.NopPruner())
    study.optimize(metered(replay_objective(meter), own, meter), n_trials=1)
    row = Ledger(url).entries("own").iloc[0]
    assert (row["g_per_kwh"], row["pue"]) == pytest.approx((100.0, 1.2))


@pytest.mark.parametrize(
    "text", ['on_exceed = "explode"\n', "[caps.project]\nco2e_kg = -1\n", "[caps.projct]\n"]
)
def test_a_malformed_file_fails_the_sweep_up_front(lab, tmp_path, text, replay_objective):
    lab(text)
    ledger = tmp_path / "never.db"
    url = f"sqlite:///{ledger}"
    study = optuna.create_study(study_name="bad", pruner=optuna.pruners.NopPruner())
    with pytest.raises(InvalidPolicyError) as error:
        optimize(study, replay_objective(ReplayMeter(power_w=WATTS)), budget=BIG, ledger=url)
    assert "\n" not in str(error.value).strip() and "hpaudit.toml" in str(error.value)
    assert len(study.trials) == 0 and not ledger.exists()  # nothing ran, nothing written
    for build in (
        lambda: BudgetPruner(BIG, url),
        lambda: BudgetCallback(BIG, url),
        lambda: metered(lambda t: 0.0, url),
    ):
        with pytest.raises(InvalidPolicyError):
            build()


def test_env_policy_is_found_from_anywhere(tmp_path, monkeypatch, url):
    lab_file = tmp_path / "lab.toml"
    lab_file.write_text('on_exceed = "stop"\n' + _cap("project", 50.0))
    monkeypatch.setenv("HPAUDIT_POLICY", str(lab_file))
    monkeypatch.chdir(tmp_path)
    pruner = BudgetPruner(BIG, url, project="nlp")
    assert pruner.policy is not None and pruner.policy.on_exceed == "stop"


@pytest.mark.parametrize(("more_trials", "refused"), [(2, False), (20, True)])
def test_resumed_sweep_refused_when_its_forecast_exceeds_the_cap(
    lab, url, more_trials, refused, replay_objective
):
    """A resumed study knows what a typical trial costs (3 steps = 30 J): asking for more
    trials than the project cap has room for is refused up front, naming the cap and the
    overrun; a request that fits runs."""
    lab('on_exceed = "stop"\n' + _cap("project", 200.0))
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name="resumed", pruner=optuna.pruners.NopPruner())
    optimize(study, replay_objective(meter), budget=BIG, ledger=url, meter=meter, project="nlp",
             n_trials=2)  # fmt: skip
    spent_before = Ledger(url).spent(Scope(project="nlp")).energy_j
    assert spent_before == pytest.approx(2 * 3 * STEP_J)
    run = lambda: optimize(  # noqa: E731
        study, replay_objective(meter), budget=BIG, ledger=url, meter=meter, project="nlp",
        n_trials=more_trials,
    )  # fmt: skip
    if refused:
        with pytest.raises(BudgetExceededError, match="project 'nlp'"):
            run()
        assert len(study.trials) == 2  # nothing started
        assert Ledger(url).spent(Scope(project="nlp")).energy_j == spent_before
    else:
        assert run().n_trials == 2 + more_trials


@pytest.mark.parametrize("on_exceed", ["prune", "stop"])
def test_a_usd_cap_is_reported_in_usd(lab, url, on_exceed, replay_objective):
    """With a project energy cap and a user USD cap, the USD cap binds: the prune reason and
    the stop message ("stop": the pruner's; "prune": the refused next trial's) name it and
    show what was spent of it in USD, not only in kg CO2e / kWh."""
    usd_per_step = j_to_kwh(STEP_J) * 1000.0  # 1000 USD/kWh, PUE 1: 0.0028 USD a step
    lab(
        f'on_exceed = "{on_exceed}"\n[defaults]\nusd_per_kwh = 1000\npue = 1.0\n'
        + _cap("project", 1000.0)
        + f"[caps.user]\nusd = {1.5 * usd_per_step!r}\n"
    )
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name="usd", pruner=optuna.pruners.NopPruner())
    sweep = replay_objective(meter, steps=6)
    run = optimize(study, sweep, budget=BIG, ledger=url, meter=meter, project="nlp", user="ana",
                   n_trials=5)  # fmt: skip
    reason = study.trials[0].user_attrs["hpaudit_prune_reason"]
    assert study.trials[0].state == TrialState.PRUNED
    assert "user 'ana' monthly USD cap" in reason
    spent_usd = r"[0-9.e-]+ kg CO2e / [0-9.e-]+ kWh / [0-9.e-]+ USD( \(replayed\))? spent"
    assert re.match(rf"budget: {spent_usd}", reason), reason
    assert run.stopped is not None and "user 'ana' monthly USD cap" in run.stopped
    assert re.search(spent_usd, run.stopped), run.stopped

"""BudgetPruner, BudgetCallback, reservations and optimize(): a study stays inside its budget."""

from __future__ import annotations

import contextlib
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch_budget import Budget
from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import BudgetExceededError, HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement
from hpsearch_budget.optuna import BudgetCallback, BudgetPruner, metered, optimize
from hpsearch_budget.units import j_to_kwh

WATTS = 20.0  # the replay meter's power (tests/optuna/conftest.py)


def _steps_objective(spend, steps: int, cpu_s: float, log: list | None = None):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        for step in range(steps):
            spend(cpu_s)
            trial.report(x**2 + 1.0 / (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x**2

    return objective


def _trial_j(steps: int, cpu_s: float) -> float:
    return steps * cpu_s * WATTS


def test_budget_ends_the_sweep_inside_the_bound(sqlite_url, replay_meter, spend):
    steps, cpu_s = 5, 0.02
    step_j = cpu_s * WATTS
    budget_j = 4.5 * _trial_j(steps, cpu_s)
    study = optuna.create_study(study_name="seq")
    run = optimize(
        study,
        _steps_objective(spend, steps, cpu_s),
        budget=Budget(energy_kwh=j_to_kwh(budget_j)),
        ledger=sqlite_url,
        meter=replay_meter,
        n_trials=100,
    )
    spent = Ledger(sqlite_url).spent(Scope(study="seq"))
    assert run.spent.energy_j == pytest.approx(spent.energy_j)
    # one running trial: overshoot at most one checkpoint interval (one step + overhead)
    assert spent.energy_j <= budget_j + 2 * step_j
    assert spent.energy_j >= 0.6 * budget_j  # and the budget was used, not refused early
    assert run.stopped is not None and run.stopped.startswith("budget")
    # what was spent is labelled by its energy source, in the units of the budget
    assert "spent (replayed)" in run.stopped or "kWh (replayed)" in run.stopped
    assert " g CO2e" not in run.stopped and "kg CO2e" in run.stopped
    assert run.n_trials < 100
    assert "replayed" in run.describe()


def test_budget_smaller_than_a_trial_prunes_at_the_next_report(sqlite_url, replay_meter, spend):
    steps, cpu_s = 20, 0.02
    step_j = cpu_s * WATTS
    budget_j = 5.5 * step_j
    study = optuna.create_study(study_name="tiny")
    run = optimize(
        study,
        _steps_objective(spend, steps, cpu_s),
        budget=Budget(energy_kwh=j_to_kwh(budget_j)),
        ledger=sqlite_url,
        meter=replay_meter,
        n_trials=5,
    )
    first = study.trials[0]
    assert first.state == TrialState.PRUNED
    assert first.user_attrs["hpaudit_prune_reason"].startswith("budget")
    assert max(first.intermediate_values) < steps - 1
    assert run.spent.energy_j <= budget_j + 2 * step_j
    assert run.n_pruned_budget >= 1 and run.stopped is not None


def test_least_promising_running_trial_is_pruned_first(sqlite_url, replay_meter, spend):
    """Two trials run side by side (n_jobs=2); the budget pays for about one and a half: the
    one with the worse intermediate value is pruned, the better one completes."""
    steps, cpu_s = 8, 0.05
    budget_j = 1.75 * _trial_j(steps, cpu_s)  # 1.5 trials + the per-step overhead
    barrier = threading.Barrier(2, timeout=10)

    def objective(trial):
        x = trial.suggest_float("x", -5, 5)
        for step in range(steps):
            spend(cpu_s)
            # Both spent before either reports, so the shared meter splits each step evenly
            # (1 J each) and the forecasts do not depend on how the threads interleave.
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
            trial.report(x**2 + 1.0 / (step + 1), step)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()  # both reported before either asks the pruner
            if trial.should_prune():
                barrier.abort()
                raise optuna.TrialPruned()
        barrier.abort()
        return x**2

    study = optuna.create_study(study_name="rank")
    study.enqueue_trial({"x": 3.0})  # worse (minimising x^2)
    study.enqueue_trial({"x": 0.5})
    optimize(
        study,
        objective,
        budget=Budget(energy_kwh=j_to_kwh(budget_j)),
        ledger=sqlite_url,
        meter=replay_meter,
        max_steps=steps,
        n_trials=2,
        n_jobs=2,
    )
    by_x = {t.params["x"]: t for t in study.trials}
    assert by_x[3.0].state == TrialState.PRUNED
    assert by_x[3.0].user_attrs["hpaudit_prune_reason"].startswith("budget")
    assert by_x[0.5].state == TrialState.COMPLETE


def test_wrapped_pruner_is_asked_first(sqlite_url, replay_meter, spend):
    study = optuna.create_study(
        study_name="median",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
    )
    for x in (0.0, 0.1, 4.0):
        study.enqueue_trial({"x": x})
    run = optimize(
        study,
        _steps_objective(spend, 4, 0.005),
        budget=Budget(energy_kwh=1.0),
        ledger=sqlite_url,
        meter=replay_meter,
        n_trials=3,
    )
    last = study.trials[2]
    assert last.state == TrialState.PRUNED
    assert last.user_attrs["hpaudit_prune_reason"].startswith("MedianPruner")
    assert run.n_pruned_other == 1 and run.n_pruned_budget == 0 and run.stopped is None
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)  # restored afterwards


def test_exhausted_study_refuses_to_start(sqlite_url, replay_meter, spend):
    budget = Budget(energy_kwh=j_to_kwh(2.5 * 3 * 0.01 * WATTS))  # two trials and a half
    study = optuna.create_study(study_name="done")
    objective = _steps_objective(spend, 3, 0.01)
    optimize(study, objective, budget=budget, ledger=sqlite_url, meter=replay_meter, n_trials=20)
    n = len(study.trials)
    with pytest.raises(BudgetExceededError, match="already spent"):
        optimize(study, objective, budget=budget, ledger=sqlite_url, meter=replay_meter, n_trials=5)
    assert len(study.trials) == n


@pytest.mark.parametrize("bad", [{"co2e_kg": 0.0}, {"energy_kwh": -1.0}, {}, "1 kg"])
def test_bad_budgets_are_clear_errors(sqlite_url, bad):
    study = optuna.create_study()
    with pytest.raises(HpauditInputError, match="budget"):
        optimize(study, lambda t: 1.0, budget=bad, ledger=sqlite_url, n_trials=1)
    assert study.trials == []
    with pytest.raises(HpauditInputError):
        BudgetPruner("1 kg", sqlite_url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda b, url: BudgetPruner(b, url, near_fraction=2.0), "near_fraction"),
        (lambda b, url: BudgetPruner(b, url, near_fraction=0.0), "near_fraction"),
        (lambda b, url: BudgetPruner(b, url, ttl_s=-1.0), "ttl_s"),
        (lambda b, url: BudgetCallback(b, url, ttl_s=float("nan")), "ttl_s"),
        (
            lambda b, url: optimize(optuna.create_study(), lambda t: 1.0, budget=b, ledger=url,
                                    timeout=-1),
            "timeout",
        ),
    ],
)  # fmt: skip
def test_bad_pruner_callback_and_optimize_settings_are_clear_errors(sqlite_url, make, match):
    with pytest.raises(HpauditInputError, match=match) as err:
        make(Budget(co2e_kg=1.0), sqlite_url)
    assert "\n" not in str(err.value)


def test_callback_stops_every_worker_reading_the_ledger(sqlite_url, replay_meter, spend):
    """Two studies objects (two 'workers') on one storage and one ledger: once the budget is
    spent by one, the other's callback stops it before it runs a trial more."""
    storage = optuna.storages.InMemoryStorage()
    budget = Budget(energy_kwh=j_to_kwh(2.5 * 3 * 0.01 * WATTS))
    first = optuna.create_study(study_name="shared", storage=storage)
    objective = metered(_steps_objective(spend, 3, 0.01), sqlite_url, replay_meter)
    first.optimize(objective, n_trials=4)  # spends more than the budget, unguarded
    second = optuna.load_study(study_name="shared", storage=storage)
    stop = BudgetCallback(budget, sqlite_url)
    second.optimize(objective, n_trials=10, callbacks=[stop])
    assert len(second.trials) == 5  # the one trial it ran, then the callback stopped it
    assert stop.stopped is not None and "cannot pay" in stop.stopped


def test_multi_objective_budget_with_energy_objective(sqlite_url, replay_meter, spend):
    def objective(trial):
        n = trial.suggest_int("n", 1, 3)
        spend(0.01 * n)
        return float(n)

    budget_j = 6 * 0.02 * WATTS
    study = optuna.create_study(study_name="mo", directions=["maximize", "minimize"])
    run = optimize(
        study,
        objective,
        budget=Budget(energy_kwh=j_to_kwh(budget_j)),
        ledger=sqlite_url,
        meter=replay_meter,
        energy_objective=True,
        n_trials=100,
    )
    assert run.stopped is not None and len(study.trials) < 100
    assert run.spent.energy_j <= budget_j + 0.03 * WATTS * 1.5  # at most one trial beyond
    assert all(len(t.values) == 2 for t in study.trials if t.state == TrialState.COMPLETE)


def test_policy_cap_binds_before_the_budget(sqlite_url, replay_meter, spend):
    from hpsearch_budget.policy import parse_policy

    cap_j = 3 * 3 * 0.01 * WATTS
    policy = parse_policy(f"[caps.project]\nenergy_kwh = {j_to_kwh(cap_j)!r}\n")
    study = optuna.create_study(study_name="capped")
    run = optimize(
        study,
        _steps_objective(spend, 3, 0.01),
        budget=Budget(energy_kwh=1.0),
        ledger=sqlite_url,
        meter=replay_meter,
        policy=policy,
        project="lab",
        user="ana",
        n_trials=50,
    )
    assert run.n_trials < 50
    assert Ledger(sqlite_url).spent(Scope(project="lab")).energy_j <= cap_j + 2 * 0.01 * WATTS


def test_budget_callback_run_by_metered_stops_like_an_optuna_callback(
    sqlite_url, replay_meter, spend, tmp_path
):
    """The same BudgetCallback, given to metered() instead of study.optimize(callbacks=...),
    stops the study after the same trial."""
    budget = Budget(energy_kwh=j_to_kwh(2.5 * 3 * 0.01 * WATTS))  # 2.5 trials
    ends = []
    for how in ("optuna", "metered"):
        stop = BudgetCallback(budget, f"sqlite:///{tmp_path / how}.db")
        objective = metered(
            _steps_objective(spend, 3, 0.01),
            stop.ledger,
            replay_meter,
            budget_callback=stop if how == "metered" else None,
        )
        study = optuna.create_study()
        study.optimize(objective, n_trials=10, callbacks=[stop] if how == "optuna" else None)
        assert stop.stopped is not None and "cannot pay" in stop.stopped
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        ends.append(len(study.trials))
    assert ends[0] == ends[1] == 2  # 0.5 of a trial left cannot pay for one more


def _optimize_2_steps(study, spend, meter, url, **kwargs):
    """optimize() on a study of 2-step trials, under a budget that never binds."""
    objective = _steps_objective(spend, 2, 0.01)
    return optimize(
        study, objective, budget=Budget(energy_kwh=1.0), ledger=url, meter=meter, **kwargs
    )


def test_optimize_spares_optunas_reread_of_finished_trials(sqlite_url, replay_meter, spend):
    """optimize() hands study.optimize no callback list of its own: Optuna reads every
    finished trial back from its storage once more for any list, even an empty one. So the
    budgeted sweep reads trials from Optuna's storage as often as a plain one."""

    def count_reads(study: optuna.Study) -> list:
        reads: list = []
        get_trial = study._storage.get_trial
        study._storage.get_trial = lambda trial_id: reads.append(trial_id) or get_trial(trial_id)
        return reads

    plain = optuna.create_study()
    plain_reads = count_reads(plain)
    plain.optimize(_steps_objective(spend, 2, 0.01), n_trials=3)
    study = optuna.create_study()
    reads = count_reads(study)
    run = _optimize_2_steps(
        study,
        spend,
        replay_meter,
        sqlite_url,
        n_trials=3,
    )
    assert run.n_complete == 3 and len(reads) == len(plain_reads)
    seen = []
    _optimize_2_steps(
        study,
        spend,
        replay_meter,
        sqlite_url,
        n_trials=2,
        callbacks=[lambda s, t: seen.append(t.user_attrs["energy_kwh"])],
    )
    assert len(seen) == 2 and all(kwh > 0 for kwh in seen)  # a user's callback still runs


def test_failing_budget_callback_stops_the_study_and_keeps_the_trial(
    sqlite_url, replay_meter, spend, monkeypatch
):
    """A budget callback that raises (say, the ledger's database went away) stops the study;
    the trial it ran after stays complete, and optimize() raises the error."""

    def broken(self, study, cost):
        raise RuntimeError("ledger database unreachable")

    monkeypatch.setattr(BudgetCallback, "after_trial", broken)
    study = optuna.create_study()
    with pytest.raises(RuntimeError, match="unreachable"):
        _optimize_2_steps(study, spend, replay_meter, sqlite_url, n_trials=5)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]
    assert Ledger(sqlite_url).spent(Scope(study=study.study_name)).energy_j > 0


def test_no_room_reason_names_the_limit_and_what_is_used(sqlite_url):
    """The reason a trial gets when no room is left states the limit, what is spent or
    reserved under it, and the forecast, each in the budget's units."""
    from hpsearch_budget.budget._accounting import Accounting
    from hpsearch_budget.optuna._metered import _no_room_reason

    ledger = Ledger(sqlite_url)
    w = ledger.open_window("s", "s:0")
    ledger.finalize(w, Measurement(1.0, {"cpu": 2700.0}), status="complete")  # 0.75 Wh
    inf = float("inf")
    limit = Cost(energy_j=3600.0, co2e_g=inf, usd=inf, gpu_s=inf)  # 1 Wh
    named = [(Scope(study="s"), limit, "study 's' budget")]
    acc = Accounting(ledger, [(Scope(study="s"), limit)], ttl_s=0.0)
    index, why = _no_room_reason(named, acc, Cost(energy_j=1800.0), optuna.create_study())
    assert index == 0
    assert "of 0.001 kWh: " in why and "0.00075 kWh spent or reserved" in why
    assert "forecast " in why and "0.0005 kWh, estimate" in why
    # Once the limit is spent, the forecast (0 with no finished trial) says nothing: it is not
    # "a typical trial (forecast 0 kWh) does not fit" but that the budget is spent.
    w = ledger.open_window("s", "s:1")
    ledger.finalize(w, Measurement(1.0, {"cpu": 900.0}), status="complete")  # 1 Wh in all
    index, why = _no_room_reason(named, acc, Cost(), optuna.create_study())
    assert why.startswith("budget: the study 's' budget of 0.001 kWh is spent: ")
    assert "0.001 kWh spent or reserved" in why
    assert "forecast" not in why


def test_a_trial_waiting_for_room_takes_no_share_of_the_running_trials_energy(
    sqlite_url, replay_meter, spend
):
    """n_jobs=2: one trial holds the reservation and runs; the other waits for room in the
    budget and is then pruned without having run. The runner is charged all it spent; the
    waiting trial nothing (the process's meter was split with it while it waited)."""
    step_j, steps = 10.0, 10
    ledger = Ledger(sqlite_url)
    study = optuna.create_study(study_name="wait")

    def objective(trial):
        if trial.number > 0:  # the runner: until the other trial waits, with its row open
            deadline = time.monotonic() + 20.0
            while len(ledger.entries(study="wait", open_only=True)) < 2:
                assert time.monotonic() < deadline, "the second trial never opened its row"
                time.sleep(0.01)
        for step in range(steps):
            spend(step_j / WATTS)
            time.sleep(0.02)
            trial.report(float(step), step)
        return 1.0

    kwargs = {"ledger": ledger, "meter": replay_meter}
    optimize(study, objective, budget=Budget(energy_kwh=1.0), n_trials=1, **kwargs)
    # Room for the first trial's 100 J and one more at a time: the second waits, then finds
    # that after the runner nothing typical fits any more.
    budget = Budget(energy_kwh=j_to_kwh(2.5 * steps * step_j))
    optimize(study, objective, budget=budget, n_trials=2, n_jobs=2, **kwargs)
    rows = ledger.entries(study="wait").set_index("trial_number")
    ran = [t.number for t in study.trials if t.intermediate_values]
    waited = [t.number for t in study.trials if not t.intermediate_values]
    assert len(ran) == 2 and len(waited) == 1, [t.state for t in study.trials]
    assert rows.loc[ran, "energy_j"].tolist() == [pytest.approx(steps * step_j)] * 2
    assert rows.loc[waited[0], "energy_j"] == 0.0
    assert rows.loc[waited[0], "status"] == "pruned"
    assert study.trials[waited[0]].user_attrs["hpaudit_prune_reason"].startswith("budget")


def test_overspent_study_budget_says_to_raise_the_budget_not_a_policy_cap(
    sqlite_url, replay_meter, spend
):
    """A study whose own budget is already overspent is refused with a hint that fits it:
    there is no policy file, so 'raise the cap in the policy file' / on_exceed do not apply."""
    study = optuna.create_study(study_name="over")
    objective = _steps_objective(spend, 3, 0.01)
    kwargs = {"ledger": sqlite_url, "meter": replay_meter}
    optimize(study, objective, budget=Budget(energy_kwh=1.0), n_trials=3, **kwargs)
    tiny = Budget(energy_kwh=j_to_kwh(0.1))  # far below the 1.8 J already spent
    with pytest.raises(BudgetExceededError, match="study 'over' budget") as error:
        optimize(study, objective, budget=tiny, n_trials=3, **kwargs)
    message = str(error.value)
    assert "\n" not in message and "raise the budget" in message
    assert "policy file" not in message and "on_exceed" not in message
    assert len(study.trials) == 3

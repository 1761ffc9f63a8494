"""Checkpoint throttling: far from the limit, reports covered by their trial's reservation
skip the ledger write; near it, every report is written before the pruner decides."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import numpy as np
import optuna
import pytest

from hpsearch_budget import Budget
from hpsearch_budget.budget import Cost, TrialForecaster
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.optuna import BudgetPruner, _state, metered
from hpsearch_budget.units import j_to_kwh

WATTS = 20.0  # the replay meter's power (tests/optuna/conftest.py)
STEPS, STEP_S = 8, 0.01
TRIAL_J = STEPS * STEP_S * WATTS


class CountingLedger(Ledger):
    """A ledger that counts checkpoint writes per window and says when the heartbeat wrote."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.writes: Counter[int] = Counter()
        self.heartbeat = threading.Event()

    def checkpoint(self, window_id: int, *args: Any, **kwargs: Any) -> Any:
        self.writes[int(window_id)] += 1
        cost = super().checkpoint(window_id, *args, **kwargs)
        if threading.current_thread().name == "hpaudit-heartbeat":
            self.heartbeat.set()
        return cost


def _objective(spend, ledger: Ledger, study: str, seen: dict[int, list[tuple[int, int, float]]]):
    """Reports STEPS steps; records (step, row step after should_prune, trial.cost J)."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        for step in range(STEPS):
            spend(STEP_S)
            trial.report(x**2 + 1.0 / (step + 1), step)
            cost_j = trial.cost.energy_j  # type: ignore[attr-defined]
            if trial.should_prune():
                raise optuna.TrialPruned()
            rows = ledger.entries(study=study)
            row_step = int(
                rows.loc[rows["trial_number"] == trial.number, "step"].fillna(-1).iloc[0]
            )
            seen.setdefault(trial.number, []).append((step, row_step, cost_j))
        return x**2

    return objective


def _sweep(url: str, replay_meter, spend, budget_j: float, n_trials: int, **kwargs: Any):
    ledger = CountingLedger(url)
    budget = Budget(energy_kwh=j_to_kwh(budget_j))
    name = f"throttle-{budget_j:g}"
    pruner = BudgetPruner(budget, ledger, max_steps=STEPS, ttl_s=0.0, policy=False)
    study = optuna.create_study(study_name=name, pruner=pruner)
    seen: dict[int, list[tuple[int, int, float]]] = {}
    obj = metered(
        _objective(spend, ledger, name, seen),
        ledger,
        replay_meter,
        budget=budget,
        policy=False,
        max_steps=STEPS,
        min_checkpoint_interval_s=3600.0,  # time never forces a write in these tests
        **kwargs,
    )
    study.optimize(obj, n_trials=n_trials)
    rows = ledger.entries(study=name).set_index("trial_number")
    writes = {int(n): ledger.writes[int(rows.loc[n, "id"])] for n in rows.index}
    return study, rows, writes, seen


def test_far_study_writes_fewer_checkpoints(sqlite_url, replay_meter, spend):
    study, rows, writes, seen = _sweep(sqlite_url, replay_meter, spend, 100 * TRIAL_J, 3)
    # Trial 0 has no reservation (nothing to forecast from): every report is written.
    assert writes[0] == STEPS
    # Later trials reserve a whole trial as their row opens: no report is written before the
    # end, and the pending last step goes in with the final row (no checkpoint at all).
    assert writes[1] == writes[2] == 0
    # The live cost is fresh at every report all the same, and so is every finished row.
    for number in (1, 2):
        costs = [c for _, _, c in seen[number]]
        assert costs == pytest.approx([(s + 1) * STEP_S * WATTS for s in range(STEPS)])
        assert [r for _, r, _ in seen[number]][:-1] == [-1] * (STEPS - 1)  # row not written
    for t in study.trials:
        assert rows.loc[t.number, "status"] == "complete"
        assert rows.loc[t.number, "step"] == STEPS - 1
        assert rows.loc[t.number, "energy_j"] == pytest.approx(TRIAL_J)


def test_near_study_writes_every_report(sqlite_url, replay_meter, spend):
    # 2.1 trials: trial 1 reserves a whole trial (spent 1 + committed 1 <= 2.1) and is near
    # the limit (2 / 2.1 >= 0.9) from its first report on.
    _, rows, writes, seen = _sweep(sqlite_url, replay_meter, spend, 2.1 * TRIAL_J, 2)
    assert rows.loc[1, "status"] == "complete" and rows.loc[1, "reserved_energy_j"] > 0
    assert writes[1] == STEPS
    # Every report reached the ledger before the pruner decided (the first by the pruner).
    assert [(s, r) for s, r, _ in seen[1]] == [(s, s) for s in range(STEPS)]


def test_zero_interval_writes_every_report(sqlite_url, replay_meter, spend):
    _, _, writes, _ = _sweep(
        sqlite_url, replay_meter, spend, 100 * TRIAL_J, 2, checkpoint_interval_s=30.0
    )
    assert writes[1] == 0
    ledger = CountingLedger(sqlite_url)
    obj = metered(
        lambda t: [t.report(1.0, s) for s in range(3)] and 1.0,
        ledger,
        replay_meter,
        budget=Budget(energy_kwh=1.0),
        policy=False,
        min_checkpoint_interval_s=0.0,
    )
    study = optuna.create_study(study_name="zero")
    study.optimize(obj, n_trials=3)
    assert sorted(ledger.writes.values()) == [3, 3, 3]


def test_pruned_trial_row_keeps_its_last_step_and_value(sqlite_url, replay_meter, spend):
    ledger = CountingLedger(sqlite_url)

    def objective(trial: optuna.Trial) -> float:
        for step in range(3):
            spend(STEP_S)
            trial.report(10.0 + step, step)
        if trial.number > 0:
            raise optuna.TrialPruned()
        return 1.0

    obj = metered(
        objective,
        ledger,
        replay_meter,
        budget=Budget(energy_kwh=1.0),
        policy=False,
        min_checkpoint_interval_s=3600.0,
    )
    study = optuna.create_study(study_name="fate")
    study.optimize(obj, n_trials=2)
    row = ledger.entries(study="fate").set_index("trial_number").loc[1]
    assert row["status"] == "pruned" and row["step"] == 2 and row["value"] == 12.0
    assert ledger.writes[int(row["id"])] == 0  # the pending step went in with finalize


def test_heartbeat_writes_a_throttled_row(sqlite_url, replay_meter, spend):
    """Crash safety: a trial whose reports are throttled is still written every checkpoint
    interval, with its pending step and energy."""
    ledger = CountingLedger(sqlite_url)
    seen: dict[str, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        spend(STEP_S)
        trial.report(1.0, 0)
        if trial.number == 1:
            ledger.heartbeat.clear()
            assert ledger.heartbeat.wait(30.0)  # the heartbeat wrote the silent row
            row = ledger.entries(study="beat").set_index("trial_number").loc[1]
            seen["step"], seen["energy_j"] = row["step"], row["energy_j"]
        return 1.0

    obj = metered(
        objective,
        ledger,
        replay_meter,
        budget=Budget(energy_kwh=1.0),
        policy=False,
        checkpoint_interval_s=0.2,
        min_checkpoint_interval_s=3600.0,  # capped at the checkpoint interval
    )
    optuna.create_study(study_name="beat").optimize(obj, n_trials=2)
    assert seen == {"step": 0, "energy_j": pytest.approx(STEP_S * WATTS)}


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), "1", True])
def test_bad_min_checkpoint_interval(sqlite_url, bad):
    with pytest.raises(HpauditInputError, match="min_checkpoint_interval_s"):
        metered(lambda t: 1.0, sqlite_url, min_checkpoint_interval_s=bad)


def _np_quantile(costs: list[Cost], q: float) -> Cost:
    arr = np.array([[c.energy_j, c.co2e_g, c.usd, c.gpu_s] for c in costs], dtype=float)
    return Cost(*(float(v) for v in np.quantile(arr, q, axis=0)))


def test_forecaster_summaries_match_numpy_and_follow_every_change():
    """The forecaster memoises its quantiles (plain Python): the same figures as numpy's,
    recomputed after every observation and every change of a setting."""
    rng = random.Random(7)
    for n in (1, 2, 5, 64, 100):
        f = TrialForecaster(max_steps=4)
        seen: list[tuple[Cost, int | None, bool]] = []
        for _ in range(n):
            cost = Cost(rng.random(), 3 * rng.random(), rng.random(), rng.random())
            steps, complete = rng.choice([1, 2, 4, None]), rng.random() < 0.7
            f.observe(cost, steps, complete=complete)
            seen = [*seen, (cost, steps, complete)][-64:]  # the forecaster's window
            totals = [c for c, _, done in seen if done]
            rates = [c.scale(1.0 / s) for c, s, _ in seen if s]
            per_step = _np_quantile(rates, 0.5) if rates else None
            expected = (
                _np_quantile(totals, 0.75)
                if totals
                else (per_step.scale(4) if per_step is not None else Cost())
            )
            assert f.new_trial() == expected  # numpy's interpolation, reproduced exactly
            assert f.per_step() == per_step
            assert f.expected_steps() == 4.0
    before = f.remaining(Cost(1.0), 0)
    f.quantile = 0.25  # a setting changed: not the memoised figure
    low = _np_quantile([c for c, _, done in seen if done], 0.25)
    assert f.remaining(Cost(1.0), 0) == (low - Cost(1.0)).clip()
    assert f.remaining(Cost(1.0), 0) != before


def test_sync_reads_only_recent_windows_and_misses_none(sqlite_url, monkeypatch):
    monkeypatch.setattr(_state, "SKEW_S", 0.0)
    read: list[int] = []

    class Reading(Ledger):
        def entries(self, *args: Any, **kwargs: Any) -> Any:
            rows = super().entries(*args, **kwargs)
            read.append(len(rows))
            return rows

    ledger = Reading(sqlite_url)
    m = Measurement(1.0, {"cpu": 10.0}, {"cpu": Source.ESTIMATED})

    def finished(n: int) -> None:
        ledger.finalize(ledger.open_window("s", f"s:{n}", trial_number=n), m, status="complete")

    for n in range(5):
        finished(n)
    other = ledger.open_window("s", "s:5", trial_number=5)  # another worker's, still running
    state = _state.StudyState(ledger, "s", None)
    state.sync(force=True)
    assert state.forecaster.n_observed == 5 and read == [6]
    ledger.finalize(other, m, status="complete")  # finishes after the sync
    finished(6)
    state.sync(force=True)
    assert state.forecaster.n_observed == 7  # both learned
    assert read[-1] == 2  # and the 5 old rows were not read again


def test_sync_backs_off_while_no_other_worker_writes(sqlite_url):
    ledger = Ledger(sqlite_url)
    m = Measurement(1.0, {"cpu": 10.0}, {"cpu": Source.ESTIMATED})
    state = _state.StudyState(ledger, "alone", None)
    state.sync()
    assert state._every_s == 2 * _state.SYNC_S  # nothing from others: read less often
    state.sync(force=True)
    assert state._every_s == 4 * _state.SYNC_S
    for _ in range(10):
        state.sync(force=True)
    assert state._every_s == _state.SYNC_MAX_S
    w = ledger.open_window("alone", "alone:0", trial_number=0)  # another worker appears
    ledger.finalize(w, m, status="complete")
    state.sync(force=True)
    assert state._every_s == _state.SYNC_S and state.forecaster.n_observed == 1
    state.observe(99, Cost(1.0), 1, "complete")  # this process's own trials do not count
    state.sync(force=True)
    assert state._every_s == 2 * _state.SYNC_S

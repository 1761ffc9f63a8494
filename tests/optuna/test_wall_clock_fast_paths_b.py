"""The hot path's two shortcuts for meters that follow the wall clock (``Meter.wall_clock``):
a report that is not written reuses a meter read up to 10 ms old, and the pruner skips its
figures for 0.1 s once a trial found its study far from the limit. Neither applies to a
simulated clock (``ReplayMeter``) or to a meter that does not say."""

from __future__ import annotations

import time

import optuna
import pytest

from hpsearch_budget import Budget
from hpsearch_budget.attribution import ProcessShareMeter
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import CompositeMeter, EstimateMeter, Meter, Reading, ReplayMeter
from hpsearch_budget.optuna import BudgetPruner, metered
from hpsearch_budget.optuna._metering import REUSE_S, SharedMeter
from hpsearch_budget.optuna._pruner import FAR_S
from hpsearch_budget.units import j_to_kwh

WATTS = 20.0


class CountingReplay(ReplayMeter):
    """A replay meter (energy only where the test charges it) that counts its reads."""

    def __init__(self) -> None:
        super().__init__(power_w=WATTS)
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        return super().read()


class WallClockReplay(CountingReplay):
    """The same, declared to follow the wall clock: the test charges energy as if it did."""

    wall_clock = True


def test_meters_say_whether_they_follow_the_wall_clock() -> None:
    class Unknown(Meter):
        def domains(self) -> list[str]:
            return ["x"]

        def read(self) -> Reading:
            return Reading(0.0, {"x": 0.0}, {})

    estimate, replay = EstimateMeter(), ReplayMeter(power_w=1.0, domain="gpu:0")
    assert estimate.wall_clock and not replay.wall_clock and not Unknown().wall_clock
    assert CompositeMeter([estimate]).wall_clock
    assert not CompositeMeter([estimate, replay]).wall_clock
    assert ProcessShareMeter(estimate).wall_clock
    assert not ProcessShareMeter(replay).wall_clock


def test_a_recent_read_of_a_wall_clock_meter_stands_for_now() -> None:
    meter = WallClockReplay()
    shared = SharedMeter(meter)
    token = shared.open()
    meter.advance(1.0)  # 20 J, within the 10 ms the open's read may stand for
    reads = meter.reads
    assert shared.measure(token, max_age_s=REUSE_S).energy_j == 0.0  # the open's read
    assert meter.reads == reads
    assert shared.measure(token).energy_j == pytest.approx(WATTS)  # max_age_s=0: fresh
    meter.advance(1.0)
    time.sleep(2 * REUSE_S)  # older than REUSE_S: read again
    assert shared.measure(token, max_age_s=REUSE_S).energy_j == pytest.approx(2 * WATTS)
    assert shared.close(token).energy_j == pytest.approx(2 * WATTS)


def test_a_simulated_clock_is_read_every_time() -> None:
    meter = CountingReplay()
    shared = SharedMeter(meter)
    token = shared.open()
    meter.advance(1.0)
    assert shared.measure(token, max_age_s=REUSE_S).energy_j == pytest.approx(WATTS)
    assert meter.reads == 2


def _objective(meter: ReplayMeter, steps: int, step_s: float):
    def objective(trial: optuna.Trial) -> float:
        for step in range(steps):
            meter.advance(step_s)
            trial.report(float(step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return 1.0

    return objective


@pytest.mark.parametrize("min_interval_s", [3600.0, 0.0])
def test_unwritten_reports_reuse_reads_and_written_ones_read_afresh(
    sqlite_url: str, min_interval_s: float
) -> None:
    steps, step_s = 8, 0.01
    meter = WallClockReplay()
    ledger = Ledger(sqlite_url)
    budget = Budget(energy_kwh=1.0)  # far from the limit
    pruner = BudgetPruner(budget, ledger, max_steps=steps, policy=False)
    study = optuna.create_study(pruner=pruner)
    obj = metered(
        _objective(meter, steps, step_s), ledger, meter, budget=budget, policy=False,
        max_steps=steps, min_checkpoint_interval_s=min_interval_s,
    )  # fmt: skip
    study.optimize(obj, n_trials=1)
    row = ledger.entries(study=study.study_name).iloc[0]
    ledger.close()
    if min_interval_s:  # reports not written: within 10 ms of a read they reuse it
        assert meter.reads < 1 + steps + 1
    else:  # every report written, each from a fresh read
        assert meter.reads >= 1 + steps + 1
    # The end reads afresh: the row holds all the trial spent.
    assert row["energy_j"] == pytest.approx(steps * step_s * WATTS)


def _prune_step(meter: ReplayMeter, sqlite_url: str) -> int | None:
    """The step at which a trial is pruned when, after one cheap step far from the limit,
    every step spends twice the budget; step 2 comes 2 x FAR_S after step 1."""
    budget_j = 100.0
    ledger = Ledger(sqlite_url)
    budget = Budget(energy_kwh=j_to_kwh(budget_j))
    pruner = BudgetPruner(budget, ledger, max_steps=10, policy=False)
    study = optuna.create_study(pruner=pruner)
    pruned_at: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        for step in range(10):
            meter.advance(0.05 if step == 0 else 2 * budget_j / WATTS)
            if step == 2:
                time.sleep(2 * FAR_S)
            trial.report(0.0, step)
            if trial.should_prune():
                pruned_at.append(step)
                raise optuna.TrialPruned()
        return 0.0

    study.optimize(metered(objective, ledger, meter, budget=budget, policy=False), n_trials=1)
    ledger.close()
    return pruned_at[0] if pruned_at else None


def test_the_pruner_skips_a_far_study_for_a_moment_on_the_wall_clock(sqlite_url: str) -> None:
    # Step 0 finds the study under half of near_fraction: reports in the next FAR_S skip the
    # figures, so step 1 (at once) runs on past the budget; the first report after FAR_S
    # prunes.
    assert _prune_step(WallClockReplay(), sqlite_url) == 2


def test_the_pruner_never_skips_on_a_simulated_clock(sqlite_url: str) -> None:
    assert _prune_step(CountingReplay(), sqlite_url) == 1

"""The per-trial forecaster, the cached accounting and the shared meter: plain numbers."""

from __future__ import annotations

import math
import threading

import pytest

from hpsearch_budget.budget import Accounting, Cost, TrialForecaster, forecast_remaining
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, ReplayMeter, Source
from hpsearch_budget.optuna._metering import SharedMeter

INF = math.inf


def test_forecast_remaining_extrapolates_own_rate():
    assert forecast_remaining(Cost(30.0, 3.0), 3, 10) == Cost(70.0, 7.0)
    assert forecast_remaining(Cost(30.0), 0, 10) == Cost()  # nothing reported yet
    assert forecast_remaining(Cost(30.0), 3, None) == Cost()  # length unknown
    assert forecast_remaining(Cost(30.0), 12, 10) == Cost()  # past the expected end


def test_forecaster_learns_length_from_complete_trials_only():
    f = TrialForecaster()
    assert f.expected_steps() is None and f.new_trial() == Cost()
    f.observe(Cost(10.0), steps=2, complete=False)  # pruned: short, but 5 J/step
    assert f.expected_steps() is None
    assert f.per_step() == Cost(5.0)
    f.observe(Cost(100.0), steps=10)
    f.observe(Cost(60.0), steps=6)
    assert f.expected_steps() == 8.0
    assert f.n_observed == 3
    # a new trial: 75th percentile of complete totals (60, 100)
    assert f.new_trial().energy_j == pytest.approx(90.0)


def test_forecaster_prior_and_max_steps():
    f = TrialForecaster(max_steps=20, prior=Cost(energy_j=50.0))
    assert f.new_trial() == Cost(energy_j=50.0)
    assert f.remaining(Cost(energy_j=10.0), 5).energy_j == pytest.approx(30.0)
    # before any report: the forecast of a whole trial, less what is spent
    assert f.remaining(Cost(energy_j=20.0), 0).energy_j == pytest.approx(30.0)


def test_forecaster_base_leaves_out_startup_cost():
    f = TrialForecaster(max_steps=10)
    # 8 J at the first report (5 J of start-up), then 1 J per step
    assert f.remaining(Cost(energy_j=8.0), 1, base=(Cost(energy_j=8.0), 1)) == Cost()
    left = f.remaining(Cost(energy_j=10.0), 3, base=(Cost(energy_j=8.0), 1))
    assert left.energy_j == pytest.approx(7.0)  # 1 J/step x 7 steps, not 10/3 x 7
    f.observe(Cost(energy_j=20.0), steps=10)
    assert f.remaining(Cost(energy_j=8.0), 1, base=(Cost(energy_j=8.0), 1)).energy_j == (
        pytest.approx(18.0)
    )  # learned 2 J/step until a second report


@pytest.mark.parametrize(
    "kwargs", [{"max_steps": 0}, {"quantile": 1.5}, {"window": 0}, {"max_steps": -3}]
)
def test_forecaster_rejects_bad_settings(kwargs):
    with pytest.raises(HpauditInputError):
        TrialForecaster(**kwargs)


def test_accounting_caches_for_ttl_and_reads_fresh_on_demand(sqlite_url):
    ledger = Ledger(sqlite_url)
    limit = Cost(1000.0, INF, INF, INF)
    acc = Accounting(ledger, [(Scope(study="s"), limit)], ttl_s=3600)
    assert acc.left().energy_j == 1000.0 and math.isinf(acc.left().co2e_g)
    w = ledger.open_window("s", "s:0", trial_number=0)
    assert ledger.try_reserve(w, Cost(energy_j=300.0), [(Scope(study="s"), limit)])
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 100.0}, {"cpu": Source.ESTIMATED}))
    assert acc.left().energy_j == 1000.0  # cached
    fresh = acc.left(fresh=True)
    assert fresh.energy_j == pytest.approx(700.0)  # 100 spent + 200 still reserved
    assert acc.left_after_release().energy_j == pytest.approx(900.0)
    assert acc.used_fraction() == pytest.approx(0.3)


def test_accounting_takes_the_tightest_of_several_limits(sqlite_url):
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("s", "s:0", project="p")
    ledger.finalize(
        w, Measurement(1.0, {"cpu": 100.0}, {"cpu": Source.ESTIMATED}), status="complete"
    )
    acc = Accounting(
        ledger,
        [
            (Scope(study="s"), Cost(1000.0, INF, INF, INF)),
            (Scope(project="p"), Cost(150.0, INF, INF, INF)),
        ],
        ttl_s=0,
    )
    assert acc.left().energy_j == pytest.approx(50.0)


def test_shared_meter_splits_concurrent_windows_and_conserves_energy():
    meter = ReplayMeter(power_w=100.0)
    shared = SharedMeter(meter)
    a = shared.open()
    meter.advance(1.0)  # 100 J: a alone
    b = shared.open()
    meter.advance(2.0)  # 200 J: a and b
    ma = shared.close(a)
    meter.advance(1.0)  # 100 J: b alone
    mb = shared.close(b)
    assert ma.energy_j == pytest.approx(200.0)
    assert mb.energy_j == pytest.approx(200.0)
    assert ma.energy_j + mb.energy_j == pytest.approx(400.0)  # all the meter saw, once
    assert ma.source == Source.REPLAYED


def test_shared_meter_is_thread_safe():
    meter = ReplayMeter(power_w=10.0)
    shared = SharedMeter(meter)
    tokens = [shared.open() for _ in range(4)]
    errors: list[BaseException] = []

    def work(token: int) -> None:
        try:
            for _ in range(200):
                shared.measure(token)
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    meter.advance(4.0)
    for t in threads:
        t.join()
    total = sum(shared.close(t).energy_j for t in tokens)
    assert not errors and total == pytest.approx(40.0)


def test_measurement_cumulative_since_open():
    meter = ReplayMeter(power_w=50.0)
    shared = SharedMeter(meter)
    token = shared.open()
    meter.advance(1.0)
    first = shared.measure(token)
    meter.advance(1.0)
    second = shared.measure(token)
    assert isinstance(first, Measurement)
    assert (first.energy_j, second.energy_j) == (pytest.approx(50.0), pytest.approx(100.0))


def test_a_cost_that_is_not_finite_teaches_nothing():
    f = TrialForecaster(max_steps=10, window=2)
    f.observe(Cost(energy_j=100.0), steps=10)
    f.observe(Cost(energy_j=float("nan")), steps=10)
    f.observe(Cost(energy_j=float("inf"), co2e_g=1.0), steps=10)
    f.observe(Cost(energy_j=300.0), steps=10)  # the window now holds 100 and 300 J
    assert f.new_trial().energy_j == pytest.approx(250.0)  # the 0.75 quantile
    assert f.per_step().energy_j == pytest.approx(20.0)
    f.observe(Cost(energy_j=500.0), steps=10)  # 100 J leaves the window
    assert f.new_trial().energy_j == pytest.approx(450.0)

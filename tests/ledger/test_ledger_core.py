"""Ledger core: windows, checkpoints, carbon per checkpoint, spent / committed, reservations."""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from hpsearch_budget.budget import Cost
from hpsearch_budget.carbon import CarbonModel, Intensity, StaticIntensity
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.ledger import ENTRY_COLUMNS, Ledger, Scope
from hpsearch_budget.ledger import _ledger as ledger_module
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.units import j_to_kwh

INF = math.inf
NO_LIMIT = Cost(INF, INF, INF, INF)


def gpu(joules: float, wall_s: float = 1.0) -> Measurement:
    return Measurement(wall_s, {"gpu:0": joules}, {"gpu:0": Source.MEASURED})


@dataclass
class SwitchableIntensity:
    """A time-series stand-in: the test decides which intensity is in force 'now'."""

    values: list[Intensity]
    index: int = 0
    asked: list[datetime] = field(default_factory=list)

    def at(self, when: datetime) -> Intensity:
        self.asked.append(when)
        return self.values[self.index]


def test_window_round_trip_has_the_contract_columns(ledger_url: str) -> None:
    carbon = CarbonModel(StaticIntensity.of(400.0, "test grid", 2024), pue=1.5, usd_per_kwh=0.2)
    with Ledger(ledger_url, carbon=carbon) as ledger:
        w = ledger.open_window(
            "mnist", "mnist:3", trial_number=3, params={"lr": 0.01, "opt": "adam"},
            devices=["gpu:0", "gpu:1"], gpu_share=0.5, project="vision", user="ada",
        )  # fmt: skip
        mid = ledger.checkpoint(w, gpu(1.8e6, wall_s=60.0), step=1, value=0.5)
        assert mid.energy_j == pytest.approx(1.8e6)
        final = ledger.finalize(w, gpu(3.6e6, wall_s=120.0), status="complete", value=0.9)
        frame = ledger.entries()
    assert list(frame.columns) == list(ENTRY_COLUMNS)
    row = frame.iloc[0]
    assert (row.study, row.trial_key, row.trial_number, row.status) == (
        "mnist",
        "mnist:3",
        3,
        "complete",
    )
    assert (row.project, row.user, row.phase) == ("vision", "ada", "tuning")
    assert row.params == {"lr": 0.01, "opt": "adam"}
    assert row.devices == ["gpu:0", "gpu:1"]
    assert row.energy_by_domain == {"gpu:0": 3.6e6}
    assert row.sources == {"gpu:0": "measured"} and row.source == "measured"
    # 1 kWh at the device, x1.5 PUE, x400 g/kWh, x0.2 USD/kWh; GPU time = wall x devices x share.
    assert row.co2e_g == pytest.approx(600.0) and final.co2e_g == pytest.approx(600.0)
    assert row.usd == pytest.approx(0.3)
    assert row.gpu_s == pytest.approx(120.0 * 2 * 0.5) == final.gpu_s
    assert (row.pue, row.g_per_kwh, row.intensity_source) == (1.5, 400.0, "test grid (2024)")
    assert row.value == 0.9 and row.step == 1 and row.wall_s == 120.0
    assert row.started_at.tzinfo is not None and row.ended_at >= row.started_at
    assert len(row.row_hash) == 64


def test_carbon_is_charged_at_the_intensity_in_force_at_each_checkpoint(sqlite_url: str) -> None:
    grid = SwitchableIntensity([Intensity(100.0, "night"), Intensity(500.0, "day")])
    ledger = Ledger(sqlite_url, carbon=CarbonModel(grid, pue=1.2))
    w = ledger.open_window("s", "s:0")
    ledger.checkpoint(w, gpu(1000.0))  # 1000 J spent at night
    grid.index = 1
    cost = ledger.finalize(w, gpu(3000.0), status="complete")  # 2000 J more by day
    expected = j_to_kwh(1000.0) * 1.2 * 100.0 + j_to_kwh(2000.0) * 1.2 * 500.0
    assert cost.co2e_g == pytest.approx(expected)
    row = ledger.entries().iloc[0]
    assert row.g_per_kwh == pytest.approx(expected / (j_to_kwh(3000.0) * 1.2))  # energy-weighted
    assert row.intensity_source == "night; day"
    assert all(t.tzinfo is not None for t in grid.asked)


def test_a_meter_going_backwards_never_uncharges(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url, carbon=CarbonModel(StaticIntensity.of(100.0)))
    w = ledger.open_window("s", "s:0")
    first = ledger.checkpoint(w, gpu(5000.0))
    again = ledger.checkpoint(w, gpu(10.0))  # e.g. a restarted meter
    assert again.energy_j == first.energy_j == 5000.0 and again.co2e_g == first.co2e_g


def test_spent_and_committed_follow_scopes(ledger_url: str) -> None:
    ledger = Ledger(ledger_url, carbon=CarbonModel(StaticIntensity.of(100.0)))
    a = ledger.open_window("a", "a:0", project="p1", user="u1")
    b = ledger.open_window("b", "b:0", project="p2", user="u1")
    ledger.finalize(a, gpu(100.0), status="complete")
    ledger.checkpoint(b, gpu(40.0))
    assert ledger.try_reserve(b, Cost(energy_j=100.0), [(Scope(), NO_LIMIT)])
    assert ledger.spent().energy_j == 140.0
    assert ledger.spent(Scope(study="a")).energy_j == 100.0
    assert ledger.spent(Scope(project="p2")).energy_j == 40.0
    assert ledger.spent(Scope(user="u1")).energy_j == 140.0
    assert ledger.spent(Scope(user="nobody")) == Cost()
    assert ledger.committed().energy_j == 60.0  # reserved 100, spent 40 so far
    assert ledger.committed(Scope(study="a")) == Cost()
    future = datetime.now(UTC) + timedelta(hours=1)
    assert ledger.spent(Scope(since=future)) == Cost()
    assert ledger.spent(Scope(until=future)).energy_j == 140.0
    ledger.finalize(b, gpu(70.0), status="pruned")
    assert ledger.committed() == Cost()  # released on finalise
    assert ledger.spent().energy_j == 170.0


def test_try_reserve_admits_up_to_the_limit_and_no_further(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    limit = [(Scope(study="s"), Cost(energy_j=1000.0, co2e_g=INF, usd=INF, gpu_s=INF))]
    first, second, third = (ledger.open_window("s", f"s:{i}") for i in range(3))
    assert ledger.try_reserve(first, Cost(energy_j=400.0), limit)
    assert ledger.try_reserve(second, Cost(energy_j=600.0), limit)  # exactly at the limit
    assert not ledger.try_reserve(third, Cost(energy_j=1.0), limit)
    assert ledger.entries().reserved_energy_j.tolist() == [400.0, 600.0, 0.0]
    # Finishing under forecast frees the rest of its reservation.
    ledger.finalize(first, gpu(100.0), status="complete")
    assert ledger.try_reserve(third, Cost(energy_j=300.0), limit)
    assert not ledger.try_reserve(third, Cost(energy_j=1.0), limit)
    # Another study's limit is not touched by these windows.
    assert ledger.try_reserve(third, Cost(energy_j=5.0), [(Scope(study="other"), limit[0][1])])


def test_reserve_checks_every_unit(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("s", "s:0")
    assert not ledger.try_reserve(w, Cost(gpu_s=3601.0), [(Scope(), Cost(INF, INF, INF, 3600.0))])
    assert ledger.try_reserve(w, Cost(usd=1.0), [(Scope(), Cost(INF, INF, 1.0, INF))])


def test_reap_marks_silent_windows_killed_and_keeps_their_energy(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ledger's clock, advanced by hand: a 150 ms stall of a loaded machine between two
    # calls must not decide which window is silent (it once reaped "dead" before its checkpoint).
    clock = [time.time()]
    monkeypatch.setattr(ledger_module, "_now", lambda: clock[0])
    ledger = Ledger(ledger_url, carbon=CarbonModel(StaticIntensity.of(100.0)))
    dead = ledger.open_window("s", "s:0", checkpoint_interval_s=0.05)
    alive = ledger.open_window("s", "s:1", checkpoint_interval_s=3600.0)
    ledger.checkpoint(dead, gpu(700.0))
    assert ledger.try_reserve(dead, Cost(energy_j=1000.0), [(Scope(), NO_LIMIT)])
    clock[0] += 0.3  # more than 3 intervals of 0.05 s
    assert ledger.committed().energy_j == 0.0  # a dead window's reservation no longer blocks
    assert ledger.entries().status.tolist() == ["killed", "running"]  # shown killed already
    assert ledger.reap() == 1
    assert ledger.reap() == 0
    row = ledger.entries().iloc[0]
    assert (row.status, row.energy_j) == ("killed", 700.0)
    assert ledger.spent().energy_j == 700.0
    assert ledger.verify().ok
    with pytest.raises(LedgerError, match="checkpoint_interval_s"):
        ledger.checkpoint(dead, gpu(800.0))
    ledger.finalize(alive, gpu(1.0), status="failed")
    assert ledger.verify().ok and ledger.verify().rows == 2


def test_a_worker_whose_clock_runs_ahead_neither_reaps_nor_overbooks_live_windows(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers on many machines share one PostgreSQL ledger; their clocks need not agree. A
    # machine 100 s ahead took every window silent for 90 s (3 intervals of 30 s) on its own
    # clock for dead: it reaped them and reserved the room their reservations held.
    limits = [(Scope(study="s"), Cost(1000.0, INF, INF, INF))]
    here = Ledger(pg_url)
    live, reserved = here.open_window("s", "s:0", reserve=(Cost(energy_j=500.0), limits))
    assert reserved
    here.checkpoint(live, gpu(10.0))
    with monkeypatch.context() as m:
        m.setattr(ledger_module, "_now", lambda: time.time() + 100.0)
        ahead = Ledger(pg_url)
        other, reserved = ahead.open_window("s", "s:1", reserve=(Cost(energy_j=600.0), limits))
        assert not reserved  # 500 J of 1000 J are held by the live window
        assert ahead.committed(Scope(study="s")).energy_j == pytest.approx(490.0)
        assert ahead.reap() == 0
        assert ahead.entries().status.tolist() == ["running", "running"]
        ahead.finalize(other, gpu(1.0), status="pruned")
        ahead.close()
    here.checkpoint(live, gpu(20.0))  # still running: not reaped
    here.finalize(live, gpu(30.0), status="complete")
    assert here.verify().ok


def test_finalising_twice_or_an_unknown_window_fails(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("s", "s:0")
    ledger.finalize(w, gpu(1.0), status="complete")
    with pytest.raises(LedgerError, match="already finalised as 'complete'"):
        ledger.finalize(w, gpu(2.0), status="complete")
    with pytest.raises(LedgerError, match="no window 999"):
        ledger.checkpoint(999, gpu(1.0))


def test_multi_objective_values_phases_and_late_params(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("s", "final", phase="final", params={"seed": 1})
    ledger.finalize(w, gpu(1.0), status="complete", values=[0.1, 2.0], params={"lr": 0.1})
    kept = ledger.open_window("s", "kept", params={"seed": 2})
    ledger.finalize(kept, gpu(1.0), status="complete")
    rows = ledger.entries(study="s")
    assert rows.phase[0] == "final" and rows["values"][0] == [0.1, 2.0]
    assert rows.params.tolist() == [{"lr": 0.1}, {"seed": 2}]
    assert ledger.verify().ok
    assert ledger.entries(study="missing").empty


def test_a_ledger_reopens_and_survives_pickling(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    ledger.finalize(ledger.open_window("b", "b:0"), gpu(1.0), status="complete")
    ledger.open_window("a", "a:0")
    ledger.close()
    again = pickle.loads(pickle.dumps(Ledger(sqlite_url)))
    assert again.studies() == ["a", "b"] and again.url == sqlite_url
    assert len(again.entries()) == 2


def test_default_url_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("HPAUDIT_LEDGER", url)
    assert Ledger().url == url
    monkeypatch.delenv("HPAUDIT_LEDGER")
    monkeypatch.chdir(tmp_path)
    assert Ledger().url == "sqlite:///hpaudit.db" and (tmp_path / "hpaudit.db").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"phase": "warmup"}, "unknown phase"),
        ({"gpu_share": 0.0}, "gpu_share"),
        ({"gpu_share": 1.5}, "gpu_share"),
        ({"checkpoint_interval_s": -1.0}, "checkpoint_interval_s"),
        ({"devices": "gpu:0"}, "devices must be a list"),
    ],
)
def test_open_window_rejects_bad_arguments(sqlite_url: str, kwargs: dict, match: str) -> None:
    ledger = Ledger(sqlite_url)
    with pytest.raises(HpauditInputError, match=match):
        ledger.open_window("s", "s:0", **kwargs)
    assert ledger.entries().empty  # nothing half-written


def test_bad_measurements_costs_and_statuses_are_refused(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    w = ledger.open_window("s", "s:0")
    with pytest.raises(HpauditInputError, match="status"):
        ledger.finalize(w, gpu(1.0), status="running")
    with pytest.raises(HpauditInputError, match=">= 0 J"):
        ledger.checkpoint(w, gpu(-5.0))
    with pytest.raises(HpauditInputError, match="Measurement"):
        ledger.checkpoint(w, 5.0)  # type: ignore[arg-type]
    with pytest.raises(HpauditInputError, match="finite"):
        ledger.try_reserve(w, Cost(energy_j=INF), [])
    with pytest.raises(HpauditInputError, match="Scope, Cost"):
        ledger.try_reserve(w, Cost(), [Cost()])  # type: ignore[list-item]
    with pytest.raises(HpauditInputError, match="study"):
        ledger.open_window("", "x")
    assert ledger.entries().energy_j.tolist() == [0.0]


def test_one_window_written_through_two_ledger_objects(ledger_url: str) -> None:
    # E.g. a Ray driver opens the window and a worker process checkpoints it: each side's
    # cached copy goes stale and must be re-read, never overwrite the other's figures.
    carbon = CarbonModel(StaticIntensity.of(100.0), pue=1.0)
    here, there = Ledger(ledger_url, carbon=carbon), Ledger(ledger_url, carbon=carbon)
    w = here.open_window("s", "s:0")
    here.checkpoint(w, gpu(100.0), step=1)
    there.checkpoint(w, gpu(300.0), step=2)
    assert there.try_reserve(w, Cost(energy_j=50.0), [(Scope(), NO_LIMIT)])
    cost = here.checkpoint(w, gpu(500.0), step=3)
    assert cost.energy_j == 500.0 and cost.co2e_g == pytest.approx(j_to_kwh(500.0) * 100.0)
    here.finalize(w, gpu(600.0), status="complete")
    row = there.entries().iloc[0]
    assert (row.energy_j, row.step, row.reserved_energy_j) == (600.0, 3, 50.0)
    assert row.co2e_g == pytest.approx(j_to_kwh(600.0) * 100.0)  # each joule charged once
    assert there.verify().ok
    with pytest.raises(LedgerError, match="already finalised"):
        there.checkpoint(w, gpu(700.0))


def test_entries_open_only_keeps_just_the_unfinalised_windows(tmp_path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'open.db'}")
    done = ledger.open_window("s", "s:0", trial_number=0)
    ledger.finalize(done, Measurement(1.0, {"cpu": 5.0}, {}), status="complete")
    running = ledger.open_window("s", "s:1", trial_number=1)
    ledger.open_window("other", "other:0", trial_number=0)
    assert list(ledger.entries("s")["id"]) == [done, running]
    assert list(ledger.entries("s", open_only=True)["id"]) == [running]

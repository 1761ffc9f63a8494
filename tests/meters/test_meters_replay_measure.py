"""ReplayMeter, measure() (context manager and decorator), default_meter composition."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest

import hpsearch_budget
from hpsearch_budget.errors import HpauditInputError, MeterError
from hpsearch_budget.meters import (
    CompositeMeter,
    Measurement,
    ReplayMeter,
    Source,
    default_meter,
    measure,
    shared_meter,
)


def test_replay_charges_power_times_simulated_time_exactly() -> None:
    meter = ReplayMeter(power_w={"gpu:0": 300.0, "cpu:package-0": 65.0})
    a = meter.read()
    assert meter.advance(3600.0) == 3600.0
    meter.charge(1.5, "gpu:0")
    m = meter.read() - a
    assert m.by_domain == {"gpu:0": 300.0 * 3600 + 1.5, "cpu:package-0": 65.0 * 3600}
    assert m.wall_s == 3600.0
    assert m.source == Source.REPLAYED


def test_replay_formula_and_trace() -> None:
    ramp = ReplayMeter(lambda t: 10.0 * t)  # P = 10 t W: E(0..6) = 5 t^2 = 180 J
    ramp.advance(6.0)
    assert ramp.read().energy_j["replay"] == pytest.approx(180.0, rel=1e-12)
    # a sine over one period integrates to its offset x duration
    wave = ReplayMeter(lambda t: 100.0 + 50.0 * math.sin(t), domain="gpu:0")
    wave.advance(2 * math.pi)
    assert wave.read().energy_j["gpu:0"] == pytest.approx(200.0 * math.pi, rel=1e-9)
    trace = ReplayMeter.from_trace([(5.0, 0.0), (6.0, 100.0), (8.0, 100.0)])
    assert trace.time_s == 5.0
    trace.advance(1.5)  # 50 J up the ramp, then 50 J flat
    assert trace.read().energy_j["replay"] == pytest.approx(100.0)


def test_replay_trace_from_csv_and_bad_traces(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("time_s,power_w\n0,200\n10,200\n")
    meter = ReplayMeter.from_trace(path, domain="gpu:3")
    meter.advance(20.0)
    assert meter.read().energy_j == {"gpu:3": pytest.approx(4000.0)}
    (tmp_path / "bad.csv").write_text("t,p\n0,1\n")
    with pytest.raises(HpauditInputError, match="time_s,power_w"):
        ReplayMeter.from_trace(tmp_path / "bad.csv")
    with pytest.raises(HpauditInputError, match="increase strictly"):
        ReplayMeter.from_trace([(1.0, 5.0), (1.0, 6.0)])
    with pytest.raises(HpauditInputError, match=">= 0"):
        ReplayMeter(power_w=-1.0)
    with pytest.raises(HpauditInputError, match="unknown domain"):
        ReplayMeter(1.0).charge(1.0, "gpu:9")
    with pytest.raises(HpauditInputError, match="seconds >= 0"):
        ReplayMeter(1.0).advance(-2.0)


def test_replay_realtime_accrues_with_the_wall_clock() -> None:
    meter = ReplayMeter(1000.0, realtime=True)
    a = meter.read()
    threading.Event().wait(0.02)
    m = meter.read() - a
    assert m.wall_s >= 0.02
    assert m.energy_j == pytest.approx(1000.0 * m.wall_s)


def test_measure_as_context_manager_reports_every_field() -> None:
    meter = ReplayMeter(power_w={"gpu:0": 250.0, "ram": 3.0})
    with measure(meter) as m:
        meter.advance(4.0)
        assert m.so_far().energy_j == pytest.approx(1012.0)
        meter.advance(1.0)
    assert m.energy_j == 1265.0
    assert m.by_domain == {"gpu:0": 1250.0, "ram": 15.0}
    assert m.sources == {"gpu:0": Source.REPLAYED, "ram": Source.REPLAYED}
    assert m.wall_s == 5.0
    assert isinstance(m.measurement, Measurement)
    meter.advance(100.0)
    assert m.energy_j == 1265.0  # frozen once the block ended


def test_measure_records_even_when_the_block_raises() -> None:
    meter = ReplayMeter(10.0)
    with pytest.raises(ZeroDivisionError), measure(meter) as m:
        meter.advance(2.0)
        _ = 1 / 0
    assert m.energy_j == 20.0


def test_measure_as_decorator_one_window_per_call() -> None:
    meter = ReplayMeter(100.0)
    m = measure(meter)

    @m
    def epoch(seconds: float) -> str:
        meter.advance(seconds)
        return "ok"

    assert epoch(1.0) == "ok"
    assert epoch(3.0) == "ok"
    assert (m.energy_j, m.total.energy_j, m.calls) == (300.0, 400.0, 2)
    assert epoch.measure is m  # type: ignore[attr-defined]


def test_bare_decorator_and_top_level_measure_use_the_shared_meter() -> None:
    @hpsearch_budget.measure
    def work() -> int:
        return sum(i * i for i in range(100_000))

    work()
    m = work.measure  # type: ignore[attr-defined]
    assert m.calls == 1 and m.wall_s > 0
    # this machine has no counters: the estimate, labelled as such, and says why
    assert m.energy_j > 0
    assert set(m.sources) >= {"ram"}
    assert m.notes, "an estimate must say why it is one"
    assert shared_meter() is shared_meter()


def test_measure_before_use_and_reentry_are_errors() -> None:
    m = measure(ReplayMeter(1.0))
    with pytest.raises(MeterError, match="nothing measured yet"):
        _ = m.energy_j
    with m, pytest.raises(MeterError, match="already open"), m:
        pass


def test_measure_with_prefer_builds_and_closes_its_own_meter() -> None:
    with measure(prefer="estimate") as m:
        sum(range(50_000))
    assert set(m.by_domain) == {"cpu", "ram"}
    assert m.source == Source.ESTIMATED


def test_default_meter_forcing_and_validation(tmp_path: Path) -> None:
    with default_meter(prefer="estimate") as meter:
        assert meter.domains() == ["cpu", "ram"]
    with pytest.raises(HpauditInputError, match="prefer takes one or more of"):
        default_meter(prefer="tpu")
    with pytest.raises(MeterError, match="no RAPL"):
        default_meter(prefer="rapl", powercap_root=tmp_path)


def test_forced_readers_that_meter_nothing_are_an_error_not_zero_joules(
    fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prefer="nvml" with no GPU named (or none visible) used to give a meter with no domain:
    # measure() then reported 0 J with no source and no note.
    with pytest.raises(MeterError, match=r"meters nothing.*add 'estimate'"):
        default_meter(devices=[], prefer="nvml")
    with pytest.raises(MeterError, match=r"meters nothing"), measure(devices=[], prefer="nvml"):
        pass
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(MeterError, match=r"no NVIDIA GPU visible"):
        default_meter(prefer="nvml", nvml=fakes.FakeNvml([fakes.FakeGpu(fakes.UUIDS[0])]))
    with default_meter(devices=[], prefer=("nvml", "estimate")) as meter:
        assert meter.domains() == ["cpu", "ram"]


def test_default_meter_without_counters_falls_back_with_notes(
    tmp_path: Path, fakes: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    no_driver = fakes.FakeNvml([], driver=False)
    with default_meter(nvml=no_driver, powercap_root=tmp_path) as meter:
        assert meter.domains() == ["cpu", "ram"]
        assert any("GPU counters unavailable" in n for n in meter.notes)
        assert any("CPU counters unavailable" in n for n in meter.notes)
    # a GPU asked for by name must be meterable: no silent fallback
    with pytest.raises(MeterError, match="NVIDIA driver"):
        default_meter(devices=[0], nvml=no_driver, powercap_root=tmp_path)


def test_default_meter_combines_gpu_rapl_and_estimate(fake_nvml: Any, powercap: Any) -> None:
    with default_meter(nvml=fake_nvml, powercap_root=powercap.root) as meter:
        assert meter.domains() == [
            "gpu:0",
            "gpu:1",
            "gpu:2",
            "cpu:package-0",
            "dram:package-0",
            "cpu:package-1",
            "dram:package-1",
        ]
        a = meter.read()
        fake_nvml.gpus[1].energy_mj += 5_000
        m = meter.read() - a
        assert m.by_domain["gpu:1"] == 5.0
        assert m.source == Source.MEASURED


def test_composite_rejects_overlapping_domains() -> None:
    with pytest.raises(MeterError, match="same domains"):
        CompositeMeter([ReplayMeter(1.0, domain="gpu:0"), ReplayMeter(2.0, domain="gpu:0")])


class _BrokenCounterMeter(ReplayMeter):
    """A replay meter whose ``ram`` counter breaks (reads NaN) after ``advance``: a stand-in
    for a hardware counter that returns garbage."""

    def read(self) -> Any:
        r = super().read()
        broken = {
            d: (math.nan if d == "ram" and r.time_s > 0 else j) for d, j in r.energy_j.items()
        }
        return type(r)(r.time_s, broken, r.sources)


def test_a_nan_counter_is_a_clear_error_not_zero_joules() -> None:
    from hpsearch_budget.attribution import Attributor

    meter = _BrokenCounterMeter(power_w={"gpu:0": 100.0, "ram": 5.0})
    broken = r"domain 'ram' read 0\.0 J then nan J.*broken"
    with pytest.raises(MeterError, match=broken), measure(meter):
        meter.advance(2.0)
    # The attributor subtracts readings too: the same error,
    # not a ValueError from rounding NaN or a ledger refusal naming no meter.
    meter = _BrokenCounterMeter(power_w={"gpu:0": 100.0, "ram": 5.0})
    att = Attributor(meter)
    att.start("a", cpu_s=lambda: 0.0, gpus={"gpu:0": 1.0})
    meter.advance(1.0)
    with pytest.raises(MeterError, match="'ram'"):
        att.stop("a")


def test_an_infinite_counter_difference_is_an_error_and_a_reset_counter_still_clamps() -> None:
    from hpsearch_budget.meters import Reading

    src = {"gpu:0": Source.MEASURED}
    with pytest.raises(MeterError, match="'gpu:0'"):
        _ = Reading(1.0, {"gpu:0": math.inf}, src) - Reading(0.0, {"gpu:0": 5.0}, src)
    backwards = Reading(1.0, {"gpu:0": 3.0}, src) - Reading(0.0, {"gpu:0": 5.0}, src)
    assert backwards.by_domain == {"gpu:0": 0.0}

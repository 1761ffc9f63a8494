"""RaplMeter against a fake powercap tree with the real layout and units (uJ)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import hpsearch_budget.meters.rapl as rapl_module
from hpsearch_budget.errors import MeterError, MeterPermissionError
from hpsearch_budget.meters import RaplMeter, Source, default_meter

RANGE = 262_143_328_850


def test_sockets_and_dram_become_domains_without_double_counting(powercap: Any) -> None:
    with RaplMeter(powercap.root, poll_s=0) as meter:
        # core sub-zones, psys and the mmio duplicate are left out
        assert meter.domains() == [
            "cpu:package-0",
            "dram:package-0",
            "cpu:package-1",
            "dram:package-1",
        ]
        begin = meter.read()
        powercap.set("intel-rapl:0", powercap.get("intel-rapl:0") + 12_500_000)
        powercap.set("intel-rapl:1:1", powercap.get("intel-rapl:1:1") + 2_000_000)
        m = meter.read() - begin
        assert m.by_domain == {
            "cpu:package-0": 12.5,
            "dram:package-0": 0.0,
            "cpu:package-1": 0.0,
            "dram:package-1": 2.0,
        }
        assert set(m.sources.values()) == {Source.MEASURED}


def test_one_wrap_between_reads_is_added_back(powercap: Any) -> None:
    powercap.set("intel-rapl:0", RANGE - 1_000_000)  # 1 J before the wrap
    with RaplMeter(powercap.root, include=("cpu",), poll_s=0) as meter:
        begin = meter.read()
        powercap.set("intel-rapl:0", 3_000_000)  # wrapped, then 3 J more
        m = meter.read() - begin
        assert m.by_domain["cpu:package-0"] == pytest.approx(4.0)


def test_many_wraps_in_a_long_window_are_all_counted(powercap: Any) -> None:
    """Five full ranges plus a bit: each step is under one range, and a poll sees each."""
    with RaplMeter(powercap.root, include=("cpu",), poll_s=0) as meter:
        begin = meter.read()
        start = powercap.get("intel-rapl:0")
        step = RANGE * 2 // 3
        for i in range(1, 9):  # 8 steps of 2/3 range = 5.33 ranges: 5 wraps
            powercap.set("intel-rapl:0", (start + i * step) % RANGE)
            meter.poll()
        m = meter.read() - begin
        assert m.by_domain["cpu:package-0"] == pytest.approx(8 * step / 1e6)
        assert m.by_domain["cpu:package-0"] > 5 * RANGE / 1e6


def test_the_poller_thread_catches_wraps_between_window_edges(
    powercap: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls = [0]
    done = threading.Condition()
    real_poll = RaplMeter.poll

    def poll(self: RaplMeter) -> None:
        real_poll(self)
        with done:
            polls[0] += 1
            done.notify_all()

    def two_more_polls() -> None:
        # The second one surely started after the counter moved.
        with done:
            target = polls[0] + 2
            assert done.wait_for(lambda: polls[0] >= target, timeout=10.0), "poller stalled"

    # sysfs values change atomically; a rewritten file does not: serialise writes and reads.
    hardware = threading.Lock()
    real_raw = RaplMeter._raw

    def raw(zone: Any) -> int:
        with hardware:
            return real_raw(zone)

    monkeypatch.setattr(RaplMeter, "poll", poll)
    monkeypatch.setattr(RaplMeter, "_raw", staticmethod(raw))
    with RaplMeter(powercap.root, include=("cpu",), poll_s=0.005) as meter:
        begin = meter.read()
        start = powercap.get("intel-rapl:0")
        step = RANGE // 2 + 7
        for i in range(1, 7):  # 3 wraps, never read by the test in between
            with hardware:
                powercap.set("intel-rapl:0", (start + i * step) % RANGE)
            two_more_polls()
        m = meter.read() - begin
        assert m.by_domain["cpu:package-0"] == pytest.approx(6 * step / 1e6)


def test_poll_period_is_derived_from_the_wrap_period(powercap: Any) -> None:
    with RaplMeter(powercap.root) as meter:
        assert 0 < meter.poll_s <= 60.0
        assert meter._thread is not None and meter._thread.is_alive()
    assert meter._thread is None  # close() joined it


def test_a_gap_longer_than_a_wrap_period_is_reported(tmp_path: Path, powercap: Any) -> None:
    # 1 mJ range at <=2 W: wraps every 0.5 ms; reads 10 ms apart may miss wraps.
    powercap.zone("intel-rapl:3", "package-3", 0, 1000, constraint_0_max_power_uw=1_000_000)
    with RaplMeter(powercap.root, include=("cpu",), poll_s=0) as meter:
        meter.read()
        time.sleep(0.01)
        meter.read()
        time.sleep(0.01)
        meter.read()
        notes = [n for n in meter.notes if "package-3" in n]
        assert len(notes) == 1 and "a wrap may be missed" in notes[0]


def test_a_zero_power_limit_is_no_limit_not_a_1_w_bound(tmp_path: Path, powercap: Any) -> None:
    # Many zones (DRAM ones especially) publish constraint_0_max_power_uw = 0. Read as a 1 W
    # bound, a 100 J counter "could not wrap" for 100 s: a 0.15 s gap went unreported and the
    # poller read every 25 s. With no limit the bound is MAX_PACKAGE_W (a 0.1 s wrap period).
    root = tmp_path / "zero-limit"
    tree = type(powercap)(root)  # a PowercapTree with this one zone
    tree.zone("intel-rapl:0", "package-0", 0, 100_000_000, constraint_0_max_power_uw=0)
    with RaplMeter(root, include=("cpu",)) as meter:
        assert meter.poll_s == pytest.approx(100 / rapl_module.MAX_PACKAGE_W / 4)
    with RaplMeter(root, include=("cpu",), poll_s=0) as meter:
        meter.read()
        time.sleep(0.15)
        meter.read()
        assert any("a wrap may be missed" in n for n in meter.notes)


def test_permission_denied_says_how_to_fix(powercap: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(path: Path) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    # Tests run as root, where chmod cannot deny a read: fail the open the reader uses.
    monkeypatch.setattr(rapl_module, "_open_counter", denied)
    with pytest.raises(MeterPermissionError, match=r"root only.*sudo chmod -R a\+r"):
        RaplMeter(powercap.root)


def test_permission_denied_falls_back_to_the_estimate(
    powercap: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: Path) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rapl_module, "_open_counter", denied)
    with default_meter(devices=[], powercap_root=powercap.root) as meter:
        assert meter.domains() == ["cpu", "ram"]
        assert any("estimated from CPU time" in n and "chmod" in n for n in meter.notes)
    with pytest.raises(MeterPermissionError):
        default_meter(devices=[], prefer="rapl", powercap_root=powercap.root)


def test_rapl_measures_cpu_and_the_estimate_fills_in_missing_dram(powercap: Any) -> None:
    (powercap.root / "intel-rapl:0:1" / "name").write_text("uncore\n")
    (powercap.root / "intel-rapl:1:1" / "name").write_text("uncore\n")
    with default_meter(devices=[], powercap_root=powercap.root) as meter:
        assert meter.domains() == ["cpu:package-0", "cpu:package-1", "ram"]
        r = meter.read()
        assert r.sources["cpu:package-0"] == Source.MEASURED
        assert r.sources["ram"] == Source.ESTIMATED


def test_no_rapl_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match=r"no RAPL package zone.*prefer='estimate'"):
        RaplMeter(tmp_path)

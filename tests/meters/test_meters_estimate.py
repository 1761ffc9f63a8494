"""EstimateMeter on real processes and threads: charged in proportion to CPU time."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time

import pytest

from hpsearch_budget.errors import MeterError
from hpsearch_budget.meters import WATTS_PER_CORE, EstimateMeter, Source

# A child that waits for "go", then burns CPU itself and in a grandchild that stays alive
# until the end (so the meter must find it in the tree), then waits for stdin to close.
# Both leave with os._exit: interpreter teardown after the meter's last read would show in
# rusage but not in the window.
CHILD = r"""
import os, subprocess, sys, time
BURN = float(sys.argv[1])
GRAND = r'''
import os, sys, time
t0 = time.process_time()
while time.process_time() - t0 < float(sys.argv[1]):
    pass
print("burnt", flush=True)
sys.stdin.read()
os._exit(0)
'''
print("ready", flush=True)
sys.stdin.readline()
grand = None
if BURN > 0:
    grand = subprocess.Popen([sys.executable, "-c", GRAND, str(BURN * 0.75)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    t0 = time.process_time()
    while time.process_time() - t0 < BURN:
        pass
    grand.stdout.readline()
print("done", flush=True)
sys.stdin.read()
if grand is not None:
    grand.stdin.close()
    grand.wait()
os._exit(0)
"""


def _spawn(burn_s: float) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(burn_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def _finish(child: subprocess.Popen[str]) -> float:
    """Close the child's stdin, reap it; its CPU seconds incl. reaped descendants (rusage)."""
    assert child.stdin is not None
    child.stdin.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def test_busy_child_charged_in_proportion_to_cpu_time() -> None:
    busy, idle = _spawn(0.4), _spawn(0.0)
    try:
        meters = {c: EstimateMeter(c.pid, rescan_s=0.0) for c in (busy, idle)}
        begin = {c: m.read() for c, m in meters.items()}
        for child in (busy, idle):
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in (busy, idle):
            assert child.stdout is not None and child.stdout.readline().strip() == "done"
        end = {c: m.read() for c, m in meters.items()}
    finally:
        cpu_s = {c: _finish(c) for c in (busy, idle)}
    window = {c: end[c] - begin[c] for c in (busy, idle)}
    assert window[busy].sources == {"cpu": Source.ESTIMATED, "ram": Source.ESTIMATED}
    assert window[busy].by_domain["ram"] > 0 and window[idle].by_domain["ram"] > 0
    # The busy child and its grandchild burnt ~0.7 s, the idle one almost nothing.
    assert window[busy].by_domain["cpu"] > 10 * window[idle].by_domain["cpu"]
    # Cumulative tree CPU time as the meter saw it vs. the kernel's rusage after reaping.
    for child in (busy, idle):
        metered_s = end[child].energy_j["cpu"] / WATTS_PER_CORE
        assert metered_s == pytest.approx(cpu_s[child], rel=0.10, abs=0.02)
    assert cpu_s[busy] > 0.6  # the grandchild's CPU time is part of the tree


def test_thread_scope_charges_each_thread_its_own_cpu_time() -> None:
    results: dict[str, tuple[float, float]] = {}

    def trial(name: str, burn_s: float) -> None:
        meter = EstimateMeter.for_current_thread()
        t0 = time.thread_time()
        begin = meter.read()
        while time.thread_time() - t0 < burn_s:
            pass
        if burn_s == 0:
            time.sleep(0.1)
        m = meter.read() - begin
        results[name] = (m.by_domain["cpu"], time.thread_time() - t0)
        meter.close()

    threads = [threading.Thread(target=trial, args=a) for a in (("busy", 0.3), ("idle", 0.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy_j, busy_s = results["busy"]
    idle_j, _ = results["idle"]
    assert busy_j == pytest.approx(busy_s * WATTS_PER_CORE, rel=0.10)
    assert busy_j > 10 * idle_j


def test_thread_meter_refuses_reads_from_another_thread() -> None:
    meter = EstimateMeter.for_current_thread()
    meter.read()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            meter.read()
        except MeterError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    meter.close()
    assert errors and "for_current_thread" in str(errors[0])


def test_estimate_says_why_it_is_an_estimate_and_validates_input() -> None:
    with EstimateMeter(watts_per_core=7.5) as meter:
        assert any("7.5 W/core" in n and "no hardware counter" in n for n in meter.notes)
        assert meter.domains() == ["cpu", "ram"]
    with pytest.raises(MeterError, match="no process with pid"):
        EstimateMeter(2**22 + 12345)
    with pytest.raises(MeterError, match="scope must be"):
        EstimateMeter(scope="cluster")  # type: ignore[arg-type]
    assert EstimateMeter(include=("ram",)).domains() == ["ram"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"watts_per_core": math.nan},  # used to read as 0 J: NaN windows were clamped to 0
        {"watts_per_gb": math.nan},
        {"watts_per_core": math.inf},  # used to charge infinite joules
        {"watts_per_gb": -0.1},
    ],
)
def test_estimate_refuses_nan_or_infinite_watts(kwargs: dict) -> None:
    with pytest.raises(MeterError, match="finite numbers >= 0 W"):
        EstimateMeter(**kwargs)


def test_process_scope_leaves_children_out() -> None:
    child = _spawn(0.3)
    try:
        tree, alone = (
            EstimateMeter(child.pid, rescan_s=0),
            EstimateMeter(child.pid, scope="process"),
        )
        begin = tree.read(), alone.read()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        tree_j = (tree.read() - begin[0]).by_domain["cpu"]
        alone_j = (alone.read() - begin[1]).by_domain["cpu"]
    finally:
        _finish(child)
    # the grandchild burnt 0.75 x the child's time: the tree sees it, the process does not
    assert tree_j > 1.4 * alone_j > 0

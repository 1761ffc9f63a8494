"""Fixtures of the Optuna integration tests: a quiet Optuna; the CPU-time estimator (this
machine has no energy counters, nor has CI) with a CPU burner; and a replay meter for the
budget tests, whose energies must be exact to test bounds."""

from __future__ import annotations

import time
from collections.abc import Iterator

import optuna
import pytest

from hpsearch_budget.meters import EstimateMeter, ReplayMeter

#: Watts per busy core of the CPU-time meter: any constant works, energy = W x CPU seconds.
WATTS = 20.0


def cpu_time_meter() -> EstimateMeter:
    """The real estimator, CPU only, of this process: energy = WATTS x CPU seconds."""
    return EstimateMeter(scope="process", include=("cpu",), watts_per_core=WATTS)


def _burn(cpu_s: float) -> None:
    """Busy-loop for ``cpu_s`` seconds of this thread's CPU time."""
    end = time.thread_time() + cpu_s
    x = 0
    while time.thread_time() < end:
        x += 1


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture
def cpu_meter() -> EstimateMeter:
    return cpu_time_meter()


@pytest.fixture
def burn() -> object:
    """``burn(cpu_s)``: busy-loop for that much CPU time of the calling thread."""
    return _burn


@pytest.fixture
def replay_meter() -> ReplayMeter:
    """A meter on a simulated clock: energy is exactly WATTS x the seconds ``spend`` adds,
    whatever the machine's load (the estimator counts CPU time in 10 ms ticks)."""
    return ReplayMeter(power_w=WATTS)


@pytest.fixture
def spend(replay_meter: ReplayMeter) -> object:
    """``spend(seconds)``: the objective's work, charged on the replay meter."""
    return replay_meter.advance

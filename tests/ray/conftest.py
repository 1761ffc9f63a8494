"""Ray fixtures: one local Ray (2 CPUs) for the whole area, and a deterministic trace meter.

The trace meter is the "hardware CI lacks" stand-in: it implements the real ``Meter`` interface
and reads the joules a trial declared with ``burn()`` from a file of its own, so every figure in
these tests is known exactly, across worker processes and restored runs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="ray[tune] not installed: pip install -e '.[ray]'")
tune = pytest.importorskip("ray.tune", reason="ray[tune] not installed: pip install -e '.[ray]'")

from hpsearch_budget.meters import Meter, Reading, Source  # noqa: E402

# Workers cannot import this file (pytest imports it by path): send its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class TraceMeter(Meter):
    """Cumulative joules = the number in ``<folder>/<trial id>``, written by ``burn``."""

    source = Source.REPLAYED

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / tune.get_context().get_trial_id()

    def domains(self) -> list[str]:
        return ["replay"]

    def read(self) -> Reading:
        energy = float(self.path.read_text()) if self.path.exists() else 0.0
        return Reading(time.monotonic(), {"replay": energy}, {"replay": Source.REPLAYED})


class Trace:
    """A folder of per-trial joule counters shared by the driver and the workers."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder)

    def meter(self, gpu_ids: Sequence[str]) -> Meter:
        return TraceMeter(self.folder)

    def burn(self, joules: float) -> None:
        """Called in a trial: it spent ``joules`` more."""
        path = Path(self.folder) / tune.get_context().get_trial_id()
        before = float(path.read_text()) if path.exists() else 0.0
        path.write_text(repr(before + joules))

    def total(self) -> float:
        return sum(float(p.read_text()) for p in Path(self.folder).iterdir())

    def per_trial(self) -> dict[str, float]:
        return {p.name: float(p.read_text()) for p in Path(self.folder).iterdir()}


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray with 2 CPUs, started once for tests/ray (reused if already running: the
    tests cap their concurrency at 2 themselves)."""
    saved = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "0"  # experiment state after every step: restore
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()
    if saved is None:
        os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)
    else:
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = saved


@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    folder = tmp_path / "trace"
    folder.mkdir()
    return Trace(folder)


def run_config(tmp_path: Path, name: str, **kw: Any) -> Any:
    """A quiet RunConfig storing the experiment under ``tmp_path``."""
    return tune.RunConfig(name=name, storage_path=str(tmp_path / "ray_results"), verbose=0, **kw)


@pytest.fixture
def make_run_config(tmp_path: Path) -> Any:
    return lambda name, **kw: run_config(tmp_path, name, **kw)


@pytest.fixture(scope="module")
def module_trace(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    """A trace for a test module whose tests share one Ray run."""
    return Trace(tmp_path_factory.mktemp("trace"))

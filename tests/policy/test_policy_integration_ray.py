"""A lab policy in a real (tiny) Ray Tune sweep: found in the working directory without being
passed, on_exceed "stop" ends the sweep at the cap and names it, "warn" lets it run and logs
the cap once, and the policy's defaults charge the ledger rows. Same pattern as
tests/ray/conftest.py: a local Ray with 2 CPUs and a trace meter (exact joules per trial)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="ray[tune] not installed: pip install -e '.[ray]'")
tune = pytest.importorskip("ray.tune", reason="ray[tune] not installed: pip install -e '.[ray]'")

from hpsearch_budget.budget import Budget  # noqa: E402
from hpsearch_budget.ledger import Ledger, Scope  # noqa: E402
from hpsearch_budget.meters import Meter, Reading, Source  # noqa: E402
from hpsearch_budget.policy import InvalidPolicyError  # noqa: E402
from hpsearch_budget.policy._reload import CHECK_S  # noqa: E402
from hpsearch_budget.ray import (  # noqa: E402
    BudgetScheduler,
    BudgetStopper,
    LedgerCallback,
    metered,
)
from hpsearch_budget.units import j_to_kwh  # noqa: E402

pytestmark = pytest.mark.ray

# Workers cannot import this file (pytest imports it by path): send its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

STEP_J = 10.0
STEPS = 6
CAP_J = 150.0  # two complete trials and a half
N_TRIALS = 6


class _TraceMeter(Meter):
    """Cumulative joules = the number in ``<folder>/<trial id>``, written by the trial."""

    source = Source.REPLAYED

    def __init__(self, folder: str) -> None:
        self.path = Path(folder) / tune.get_context().get_trial_id()

    def domains(self) -> list[str]:
        return ["replay"]

    def read(self) -> Reading:
        energy = float(self.path.read_text()) if self.path.exists() else 0.0
        return Reading(time.monotonic(), {"replay": energy}, {"replay": Source.REPLAYED})


class _Trace:
    """``edit``: (policy file, text) that the first trial (q = 0) writes after its second
    report, then pausing ``pause_s`` (every trial pauses ``step_s`` per step)."""

    def __init__(
        self,
        folder: Path,
        edit: tuple[str, str] | None = None,
        pause_s: float = 0.0,
        step_s: float = 0.0,
    ) -> None:
        self.folder = str(folder)
        self.edit, self.pause_s, self.step_s = edit, pause_s, step_s

    def meter(self, gpu_ids: Sequence[str]) -> Meter:
        return _TraceMeter(self.folder)

    def train(self, config: dict[str, Any]) -> None:
        path = Path(self.folder) / tune.get_context().get_trial_id()
        for step in range(STEPS):
            before = float(path.read_text()) if path.exists() else 0.0
            path.write_text(repr(before + STEP_J))
            tune.report({"loss": config["q"] + 1.0 / (step + 1)})
            time.sleep(self.step_s)
            if self.edit is not None and step == 1 and config["q"] == 0.0:
                Path(self.edit[0]).write_text(self.edit[1])
                time.sleep(self.pause_s)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``sweep(toml, name)``: run a 6-trial grid under a BudgetStopper whose policy is found
    in the working directory; returns (stopper, ledger). ``edit``: the policy file's text the
    first trial writes mid-run."""
    for name in ("HPAUDIT_POLICY", "HPAUDIT_PROJECT", "HPAUDIT_USER"):
        monkeypatch.delenv(name, raising=False)

    def run(
        toml: str, name: str, scheduler: bool = False, edit: str | None = None
    ) -> tuple[Any, Ledger]:
        folder = tmp_path / name
        (folder / "trace").mkdir(parents=True)
        (folder / "hpaudit.toml").write_text(toml)
        monkeypatch.chdir(folder)
        if edit is None:
            trace = _Trace(folder / "trace")
        else:  # steps slow enough that the sweep is still starting trials after the edit
            edited = (str(folder / "hpaudit.toml"), edit)
            trace = _Trace(folder / "trace", edited, pause_s=CHECK_S + 0.2, step_s=0.3)
        url = f"sqlite:///{folder / 'ledger.db'}"
        ledger = Ledger(url)
        big = Budget(energy_kwh=1.0)
        if scheduler:
            guard: Any = BudgetScheduler(big, ledger, project="lab", max_steps=STEPS)
            config = tune.TuneConfig(
                metric="loss", mode="min", scheduler=guard, max_concurrent_trials=2
            )
        else:
            guard = BudgetStopper(big, ledger, project="lab", max_steps=STEPS)
            config = tune.TuneConfig(max_concurrent_trials=2)
        grid = tune.Tuner(
            metered(trace.train, url, meter=trace.meter, project="lab"),
            param_space={"q": tune.grid_search([0.1 * i for i in range(N_TRIALS)])},
            tune_config=config,
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(tmp_path / "ray_results"),
                verbose=0,
                stop=None if scheduler else guard,
                callbacks=[LedgerCallback(ledger)],
            ),
        ).fit()
        assert not grid.errors
        return guard, ledger

    return run


CAP = f"[caps.project]\nenergy_kwh = {j_to_kwh(CAP_J)!r}\n"
DEFAULTS = "[defaults]\ng_per_kwh = 500\npue = 1.0\n"


def test_stop_ends_the_sweep_at_the_cap_and_names_it(ray_local, sweep):
    stopper, ledger = sweep('on_exceed = "stop"\n' + CAP, "stop")
    spent = ledger.spent(Scope(project="lab")).energy_j
    assert spent <= CAP_J + 2 * STEP_J  # one report of each running trial past the cap
    assert stopper.guard.stop_reason is not None
    assert "project 'lab' monthly energy cap" in stopper.guard.stop_reason
    # only the trial whose forecast hit the cap is told so; the others that the sweep was ended
    ended = 'on_exceed = "stop" ended the sweep'
    assert sum(not why.startswith(ended) for why in stopper.reasons.values()) <= 1
    assert stopper.stop_all()
    assert len(ledger.entries("stop")) < N_TRIALS  # no new trial started after the stop


def test_a_cap_lowered_mid_sweep_stops_it(ray_local, sweep):
    """The lab lowers the cap below what is spent while the sweep runs: the driver's stopper
    re-reads the file within a second and ends the sweep at that cap; no new trial starts."""
    generous = f"[caps.project]\nenergy_kwh = {j_to_kwh(1e6)!r}\n"
    tight = f"[caps.project]\nenergy_kwh = {j_to_kwh(2 * STEP_J)!r}\n"
    stopper, ledger = sweep('on_exceed = "stop"\n' + generous, "edited", edit=tight)
    assert stopper.stop_all()  # spent is past the new cap: the sweep is over
    assert stopper.guard.binding()[1] == "project 'lab' monthly energy cap"
    rows = ledger.entries("edited")
    assert len(rows) < N_TRIALS  # trials were still to start when the edit applied


def test_prune_in_the_scheduler_names_the_cap(ray_local, sweep):
    # A cap of one trial and a half: the first two trials, started side by side before any
    # cost is known, cannot both finish.
    cap_j = 1.5 * STEPS * STEP_J
    toml = f'on_exceed = "prune"\n[caps.project]\nenergy_kwh = {j_to_kwh(cap_j)!r}\n'
    scheduler, ledger = sweep(toml, "prune", scheduler=True)
    spent = ledger.spent(Scope(project="lab")).energy_j
    assert spent <= cap_j + 2 * STEP_J
    assert scheduler.stopped_by_budget  # some trial no longer fitted the cap
    why = [scheduler.reasons[t] for t in scheduler.stopped_by_budget]
    assert any("project 'lab' monthly energy cap" in w for w in why), why
    assert scheduler.guard.stop_reason is None  # "prune" never stops the whole sweep


def test_warn_runs_on_logs_once_and_charges_policy_defaults(ray_local, sweep, caplog):
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        stopper, ledger = sweep('on_exceed = "warn"\n' + CAP + DEFAULTS, "warn")
    rows = ledger.entries("warn")
    assert list(rows["status"]) == ["complete"] * N_TRIALS  # the cap was not enforced
    assert not stopper.stopped and stopper.guard.stop_reason is None
    assert rows["energy_j"].sum() == pytest.approx(N_TRIALS * STEPS * STEP_J)
    named = [r.getMessage() for r in caplog.records if "project 'lab' monthly" in r.getMessage()]
    assert len(named) == 1 and "not enforced" in named[0]
    # the policy's defaults charged the windows the workers wrote
    assert list(rows["g_per_kwh"]) == pytest.approx([500.0] * N_TRIALS)
    assert set(rows["pue"]) == {1.0}


def test_a_malformed_file_fails_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.delenv("HPAUDIT_POLICY", raising=False)
    (tmp_path / "hpaudit.toml").write_text('on_exceed = "later"\n')
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with pytest.raises(InvalidPolicyError, match="on_exceed"):
        BudgetStopper(Budget(energy_kwh=1.0), Ledger(url))
    with pytest.raises(InvalidPolicyError, match="on_exceed"):
        metered(lambda config: None, url)
    assert BudgetStopper(Budget(energy_kwh=1.0), Ledger(url), policy=False).guard.policy is None

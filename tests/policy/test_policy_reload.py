"""A lab policy edited while a sweep runs: the running sweep enforces the new caps within
CHECK_S (one second); a broken or deleted file leaves the last good caps in force with one
warning, and a fixed file is picked up. Real Optuna sweeps, real SQLite ledgers, real files
rewritten from inside the objective; a replay meter (exact joules whatever the load)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch_budget import Budget
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import ReplayMeter
from hpsearch_budget.optuna import BudgetPruner, metered, optimize
from hpsearch_budget.policy import parse_policy, read_policy
from hpsearch_budget.policy._reload import CHECK_S
from hpsearch_budget.units import j_to_kwh

# lab(toml), url and replay_objective come from tests/policy/conftest.py
pytestmark = pytest.mark.usefixtures("policy_env")

WATTS, STEP_S = 20.0, 0.5  # one step of the objective: 10 J on the replay meter
STEP_J = WATTS * STEP_S
STEPS = 3  # a trial: 3 steps of 10 J
BIG = Budget(energy_kwh=1.0)  # the study's own budget never binds
GENEROUS = 1e6  # J: a cap that never binds
Edits = dict[int, Callable[[], None]]


def _wait_for_check() -> None:
    """Let the sweep's next look at the policy file come due."""
    time.sleep(CHECK_S + 0.2)


def _editing(edits: Edits) -> Callable[[optuna.Trial, int], None]:
    """After its first report, trial ``n`` runs ``edits[n]`` (rewrites the policy file), then
    waits for the policy check to come due before its next report."""

    def after_step(trial: optuna.Trial, step: int) -> None:
        if step == 0 and trial.number in edits:
            edits[trial.number]()
            _wait_for_check()

    return after_step


def _sweep(objective: Any, url: str, name: str, edits: Edits, n_trials: int = 12):
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name=name, pruner=optuna.pruners.NopPruner())
    run = optimize(
        study,
        objective(meter, STEPS, _editing(edits), STEP_S),
        budget=BIG,
        ledger=url,
        meter=meter,
        project="nlp",
        max_steps=STEPS,
        n_trials=n_trials,
    )
    return study, run


def _cap(name: str, joules: float) -> str:
    return f"[caps.{name}]\nenergy_kwh = {j_to_kwh(joules)!r}\n"


def _writer(folder: Path, text: str) -> Callable[[], None]:
    return lambda: (folder / "hpaudit.toml").write_text(text)


def _policy_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "edited lab policy" in r.getMessage()]


@pytest.mark.parametrize("on_exceed", ["stop", "prune"])
def test_a_cap_lowered_mid_sweep_ends_the_sweep(lab, url, on_exceed, replay_objective):
    """Trial 2 lowers the project cap below what is spent (60 J): its own next report is
    pruned naming the cap, and no trial starts after it."""
    folder = lab(f'on_exceed = "{on_exceed}"\n' + _cap("project", GENEROUS))
    tight = _writer(folder, f'on_exceed = "{on_exceed}"\n' + _cap("project", 50.0))
    study, run = _sweep(replay_objective, url, f"lowered-{on_exceed}", {2: tight})
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE] * 2
    assert states[2] == TrialState.PRUNED
    assert "project 'nlp' monthly energy cap" in study.trials[2].user_attrs["hpaudit_prune_reason"]
    assert TrialState.COMPLETE not in states[2:]  # nothing ran on under the old cap
    assert len(study.trials) <= 4  # at most one more trial asked to start, refused
    assert run.stopped is not None and "project 'nlp' monthly energy cap" in run.stopped
    spent = Ledger(url).spent(Scope(project="nlp")).energy_j
    assert spent == pytest.approx(2 * STEPS * STEP_J + 2 * STEP_J)  # 2 trials + 2 steps


def test_warn_mid_sweep_logs_the_new_cap_once(lab, url, caplog, replay_objective):
    folder = lab('on_exceed = "warn"\n' + _cap("project", GENEROUS))
    lowered = _writer(folder, 'on_exceed = "warn"\n' + _cap("project", 50.0))
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        study, _ = _sweep(replay_objective, url, "warned", {2: lowered}, n_trials=6)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6  # warned, not enforced
    named = [r.getMessage() for r in caplog.records if "project 'nlp' monthly" in r.getMessage()]
    assert len(named) == 1 and "not enforced" in named[0]


@pytest.mark.parametrize("breakage", ["bad toml", "bad key", "deleted"])
def test_a_broken_edit_keeps_the_last_good_caps_with_one_warning(
    lab, url, caplog, breakage, replay_objective
):
    """The file breaks at trial 0 and stays broken while the sweep looks at it several times:
    one warning naming the file and the problem, and the old 100 J cap still ends the sweep."""
    folder = lab('on_exceed = "stop"\n' + _cap("project", 100.0))
    path = folder / "hpaudit.toml"
    breaks = {
        "bad toml": _writer(folder, 'on_exceed = "stop"\n[caps.project\nenergy_kwh = 1\n'),
        "bad key": _writer(folder, 'on_exceed = "stop"\n[caps.projct]\nenergy_kwh = 1.0\n'),
        "deleted": path.unlink,
    }
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        # trials 0 and 1 each wait for a check of the broken file: it is looked at twice
        _, run = _sweep(replay_objective, url, "broken", {0: breaks[breakage], 1: lambda: None})
    assert run.stopped is not None and "project 'nlp' monthly energy cap" in run.stopped
    spent = Ledger(url).spent(Scope(project="nlp")).energy_j
    # stopped at the old cap (when a typical 30 J trial no longer fitted), not run on
    assert 100.0 - STEPS * STEP_J < spent <= 100.0 + 2 * STEP_J
    warnings = _policy_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert str(path) in warnings[0] and "last good version" in warnings[0]
    problem = {"bad toml": "not valid TOML", "bad key": "projct", "deleted": "gone"}[breakage]
    assert problem in warnings[0]


def test_a_fixed_file_is_picked_up(lab, url, caplog, replay_objective):
    folder = lab('on_exceed = "stop"\n' + _cap("project", GENEROUS))
    broken = _writer(folder, 'on_exceed = "stop"\n[caps.project]\nenergy_kwh = "lots"\n')
    fixed = _writer(folder, 'on_exceed = "stop"\n' + _cap("project", 50.0))
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        study, run = _sweep(replay_objective, url, "fixed", {1: broken, 2: fixed})
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE] * 2
    assert study.trials[2].state == TrialState.PRUNED
    assert run.stopped is not None and "project 'nlp' monthly energy cap" in run.stopped
    assert len(_policy_warnings(caplog)) == 1


def test_a_policy_given_as_an_object_never_changes(lab, url):
    folder = lab('on_exceed = "stop"\n' + _cap("project", GENEROUS))
    path = folder / "hpaudit.toml"
    given = BudgetPruner(BIG, url, policy=read_policy(path))
    followed = BudgetPruner(BIG, url, policy=str(path))
    objective = metered(lambda trial: 0.0, url, policy=read_policy(path))
    path.write_text('on_exceed = "warn"\n' + _cap("project", 50.0))
    _wait_for_check()
    for fixed in (given.policy, objective.policy):
        assert fixed is not None and fixed.on_exceed == "stop"
    assert followed.policy is not None and followed.policy.on_exceed == "warn"


def test_metered_alone_reserves_under_the_edited_cap(lab, url, replay_objective):
    """Without optimize(), BudgetPruner or BudgetCallback: the metered objective finds the
    file itself and, after the edit, the next trial finds no room under the new cap."""
    folder = lab('on_exceed = "prune"\n' + _cap("project", GENEROUS))
    tight = _writer(folder, 'on_exceed = "prune"\n' + _cap("project", 50.0))
    meter = ReplayMeter(power_w=WATTS)
    study = optuna.create_study(study_name="alone", pruner=optuna.pruners.NopPruner())
    edited = replay_objective(meter, STEPS, _editing({1: tight}), STEP_S)
    objective = metered(edited, url, meter, project="nlp")
    study.optimize(objective, n_trials=8)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]  # then the study stopped
    assert "project 'nlp' monthly energy cap" in study.trials[2].user_attrs["hpaudit_prune_reason"]


def test_warn_again_when_an_edit_changes_a_passed_caps_value(lab, url, caplog, replay_objective):
    """The 50 J warn cap is passed and warned about; an edit to 60 J (still passed) is a new
    cap: warned about once more, with its new value. A cap the edit leaves alone is not."""
    folder = lab('on_exceed = "warn"\n' + _cap("project", 50.0) + _cap("user", 40.0))
    raised = _writer(folder, 'on_exceed = "warn"\n' + _cap("project", 60.0) + _cap("user", 40.0))
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        _sweep(replay_objective, url, "rewarned", {4: raised}, n_trials=6)
    project = [r.getMessage() for r in caplog.records if "project 'nlp' monthly" in r.getMessage()]
    user = [r.getMessage() for r in caplog.records if "monthly energy cap" in r.getMessage()
            and "user" in r.getMessage()]  # fmt: skip
    assert len(project) == 2, project
    assert "cap (1.389e-05 kWh)" in project[0] and "cap (1.667e-05 kWh)" in project[1]  # 50, 60 J
    assert len(user) == 1, user


@pytest.fixture
def no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder without a policy file (none above it either), made the working
    directory."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _created(path: Path, text: str) -> Callable[[], None]:
    return lambda: path.write_text(text)


@pytest.mark.parametrize("name", ["hpaudit.toml", "pyproject.toml"])
def test_a_policy_file_created_mid_sweep_applies(no_file, url, name, replay_objective):
    """No file at the start; the lab admin adds one at trial 2 (hpaudit.toml, or a
    [tool.hpaudit] table in pyproject.toml): its cap, below what is spent (60 J), prunes trial
    2 at its next report and ends the sweep, as an edit would."""
    policy = 'on_exceed = "stop"\n' + _cap("project", 50.0)
    if name == "pyproject.toml":
        policy = '[project]\nname = "x"\n\n[tool.hpaudit]\n' + policy.replace(
            "[caps.project]", "[tool.hpaudit.caps.project]"
        )
    study, run = _sweep(replay_objective, url, "created", {2: _created(no_file / name, policy)})
    states = [t.state for t in study.trials]
    assert states[:2] == [TrialState.COMPLETE] * 2
    assert states[2] == TrialState.PRUNED
    assert "project 'nlp' monthly energy cap" in study.trials[2].user_attrs["hpaudit_prune_reason"]
    assert run.stopped is not None and "project 'nlp' monthly energy cap" in run.stopped


def test_a_malformed_new_file_warns_once_and_its_fix_applies(
    no_file, url, caplog, replay_objective
):
    """The file appears broken at trial 1 (looked at twice): one warning naming it, and the
    sweep runs on with no caps; the fixed file (trial 3) ends it."""
    path = no_file / "hpaudit.toml"
    edits = {
        1: _created(path, 'on_exceed = "stop"\n[caps.project\nenergy_kwh = 1\n'),
        2: lambda: None,
        3: _created(path, 'on_exceed = "stop"\n' + _cap("project", 50.0)),
    }
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget"):
        study, run = _sweep(replay_objective, url, "created-broken", edits)
    states = [t.state for t in study.trials]
    assert states[:3] == [TrialState.COMPLETE] * 3  # past 50 J: the broken file set no cap
    assert states[3] == TrialState.PRUNED
    assert run.stopped is not None and "project 'nlp' monthly energy cap" in run.stopped
    warnings = _policy_warnings(caplog)
    assert len(warnings) == 1 and str(path) in warnings[0] and "not valid TOML" in warnings[0]


def test_opted_out_and_given_policies_ignore_a_created_file(no_file, url):
    given = BudgetPruner(BIG, url, policy=parse_policy('on_exceed = "warn"\n'))
    opted_out = BudgetPruner(BIG, url, policy=False)
    found = BudgetPruner(BIG, url)  # no file yet: the empty policy
    (no_file / "hpaudit.toml").write_text('on_exceed = "stop"\n' + _cap("project", 50.0))
    _wait_for_check()
    assert given.policy is not None and given.policy.on_exceed == "warn"
    assert opted_out.policy is None
    assert found.policy is not None and found.policy.on_exceed == "stop"

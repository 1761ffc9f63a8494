"""Fixtures of the policy tests that run sweeps: a clean environment, a lab folder holding
``hpaudit.toml``, a ledger URL, an objective metered by a replay meter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest


@pytest.fixture
def policy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No policy, project, user or ledger from the environment; Optuna quiet."""
    for name in ("HPAUDIT_POLICY", "HPAUDIT_PROJECT", "HPAUDIT_USER", "HPAUDIT_LEDGER"):
        monkeypatch.delenv(name, raising=False)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """``lab(toml)``: a project folder holding ``hpaudit.toml``, made the working directory."""

    def write(text: str) -> Path:
        folder = tmp_path / "project"
        folder.mkdir(exist_ok=True)
        (folder / "hpaudit.toml").write_text(text)
        monkeypatch.chdir(folder)
        return folder

    return write


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def replay_objective() -> Callable[..., Callable[[optuna.Trial], float]]:
    """``replay_objective(meter, steps=3, after_step=None)``: an objective of ``steps`` steps of
    ``step_s`` seconds on a replay meter (exact joules whatever the load), reporting
    x^2 + 1 / (step + 1) and pruned when told; ``after_step(trial, step)`` runs after each
    report the trial survives."""

    def make(
        meter: Any,
        steps: int = 3,
        after_step: Callable[[optuna.Trial, int], None] | None = None,
        step_s: float = 0.5,
    ) -> Callable[[optuna.Trial], float]:
        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", -5, 5)
            for step in range(steps):
                meter.advance(step_s)
                trial.report(x**2 + 1.0 / (step + 1), step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
                if after_step is not None:
                    after_step(trial, step)
            return x**2

        return objective

    return make

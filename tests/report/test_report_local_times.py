"""Optuna stores trial times as naive local times: a report on a machine not on UTC must not
read them as UTC (they were shifted by the machine's offset)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from hpsearch_budget.report import load_sweep


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's local time is Tokyo's (UTC+9, no daylight saving) for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _study(storage: object) -> tuple[datetime, datetime]:
    before = datetime.now(UTC)
    study = optuna.create_study(study_name="t", storage=storage)  # type: ignore[arg-type]
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    return before, datetime.now(UTC)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_trial_times_are_utc_whatever_the_local_zone(
    tmp_path: Path, tokyo: None, kind: str
) -> None:
    if kind == "sqlite":
        source = f"sqlite:///{tmp_path / 'study.db'}"
        before, after = _study(source)
    else:
        source = str(tmp_path / "study.log")
        before, after = _study(JournalStorage(JournalFileBackend(source)))
    sweep = load_sweep(source, find_ledger=False)
    for col in ("started_at", "ended_at"):
        times = sweep.trials[col]
        assert (times >= pd.Timestamp(before) - pd.Timedelta(seconds=1)).all()
        assert (times <= pd.Timestamp(after) + pd.Timedelta(seconds=1)).all()

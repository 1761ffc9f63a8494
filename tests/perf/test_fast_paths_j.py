"""The performance paths (engineer J) keep their behaviour.

- Trial user attributes are written inside the commit in which Optuna records the trial's end:
  no extra storage commit per trial, yet every reader sees them.
- The ledger's cached aggregate statements give the same sums as a plain computation, for
  every shape of scope.
- PostgreSQL: autocommit checkpoints and the one-statement finalisation keep chains valid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
from sqlalchemy import event

from hpsearch_budget.budget import Cost
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement, ReplayMeter, Source
from hpsearch_budget.optuna import metered

INF = float("inf")
_LIMIT = Cost(energy_j=1e9, co2e_g=INF, usd=INF, gpu_s=INF)
ATTRS = {"energy_kwh", "co2e_kg", "energy_source"}


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -1, 1)
    trial.set_user_attr("energy_kwh", -1.0)  # ours must win: it is the measured figure
    for step in range(2):
        trial.report(x * x + step, step)
    return x * x


def _commits(storage: optuna.storages.RDBStorage) -> list[int]:
    count = [0]
    event.listen(storage.engine, "commit", lambda _conn: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_user_attrs_land_with_the_trial_state(tmp_path: Path, n_jobs: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    study = optuna.create_study(study_name="s", storage=url)
    seen: list[dict] = []
    study.optimize(
        metered(_objective, ledger, ReplayMeter(power_w=50.0)),
        n_trials=4,
        n_jobs=n_jobs,
        callbacks=[lambda _s, t: seen.append(dict(t.user_attrs))],
    )
    assert len(seen) == 4 and all(set(a) >= ATTRS for a in seen)  # callbacks see them
    stored = optuna.load_study(study_name="s", storage=url).trials  # a fresh reader too
    assert all(set(t.user_attrs) >= ATTRS for t in stored)
    assert all(t.user_attrs["energy_kwh"] >= 0 for t in stored)
    energy = {f"s:{t.number}": t.user_attrs["energy_kwh"] for t in stored}
    rows = ledger.entries()
    assert energy == pytest.approx(dict(zip(rows.trial_key, rows.energy_j / 3.6e6, strict=True)))


@pytest.mark.parametrize("n_trials", [3, 9])
def test_metering_adds_no_storage_commit_per_trial(tmp_path: Path, n_trials: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    counts = {}

    def quiet(trial: optuna.Trial) -> float:  # sets no user attribute of its own
        x = trial.suggest_float("x", -1, 1)
        trial.report(x, 0)
        return x

    for name, objective in (("plain", quiet), ("metered", metered(quiet, ledger))):
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / f'{name}.db'}")
        study = optuna.create_study(study_name=name, storage=storage)
        commits = _commits(storage)
        study.optimize(objective, n_trials=n_trials, callbacks=[])
        counts[name] = commits[0]
    # Per study, not per trial: the first trial reads the study's attributes and writes
    # hpaudit_ledger and hpaudit_ledger_study (the report finds the ledger, and the study in
    # it, from them); the other trials add nothing.
    assert counts["metered"] == counts["plain"] + 3, counts


def test_pruned_and_failed_trials_get_their_attrs(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:
            raise optuna.TrialPruned()
        raise RuntimeError("boom")

    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(metered(objective, ledger), n_trials=2, catch=(RuntimeError,))
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state.name for t in trials] == ["PRUNED", "FAIL"]
    assert all(set(t.user_attrs) >= ATTRS for t in trials)


def _plain_sums(ledger: Ledger, scope: Scope) -> Cost:
    rows = ledger.entries(scope=scope)
    return Cost(energy_j=float(rows["energy_j"].sum()) if len(rows) else 0.0)


def _fill(ledger: Ledger) -> None:
    src = {"cpu": Source.REPLAYED}
    for i, (study, project, user) in enumerate(
        [("a", "p", "u"), ("a", "q", "u"), ("b", "p", "v"), ("b", "q", "v")]
    ):
        w = ledger.open_window(study, f"{study}:{i}", project=project, user=user)
        ledger.finalize(w, Measurement(1.0, {"cpu": 100.0 * (i + 1)}, src), status="complete")
    w = ledger.open_window("a", "a:running", project="p", user="u")
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 7.0}, src))
    assert ledger.try_reserve(w, Cost(energy_j=50.0), [(Scope(study="a"), _LIMIT)])


def _check_scopes(ledger: Ledger) -> None:
    now = datetime.now(UTC)
    scopes = [
        Scope(),
        Scope(study="a"),
        Scope(study="b", project="q"),
        Scope(project="p", user="u"),
        Scope(user="v", since=now - timedelta(hours=1)),
        Scope(study="a", since=now - timedelta(hours=1), until=now + timedelta(hours=1)),
        Scope(until=now - timedelta(hours=1)),  # nothing started before
    ]
    for scope in scopes:
        assert ledger.spent(scope).energy_j == pytest.approx(_plain_sums(ledger, scope).energy_j)
    assert ledger.committed(Scope(study="a")).energy_j == pytest.approx(50.0 - 7.0)
    assert ledger.committed(Scope(study="b")).energy_j == 0.0


def test_cached_sum_statements_match_a_plain_sum(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    _fill(ledger)
    _check_scopes(ledger)


def test_postgres_fast_paths(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    _fill(ledger)
    _check_scopes(ledger)
    # A reservation moved the row under the cached copy: the autocommit checkpoint re-reads.
    w = ledger.open_window("a", "a:again")
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 1.0}, {"cpu": Source.REPLAYED}))
    assert ledger.try_reserve(w, Cost(energy_j=5.0), [(Scope(study="a"), _LIMIT)])
    cost = ledger.checkpoint(w, Measurement(2.0, {"cpu": 3.0}, {"cpu": Source.REPLAYED}))
    assert cost.energy_j == pytest.approx(3.0)
    ledger.finalize(w, Measurement(3.0, {"cpu": 4.0}, {"cpu": Source.REPLAYED}), status="pruned")
    report = ledger.verify()
    assert report.ok and report.rows == 5, report.summary()

"""``hpaudit report --cost-history``: the cost to finish a random-search sweep forecast from a
cost model of the lab's earlier sweeps in a ledger, on a real Optuna study and real ledgers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source

from .conftest import run_cli


def _joules(p: dict, scale: float, rng: np.random.Generator) -> float:
    """Small batches and wide nets cost more (coefficient of variation ~0.7), 10% noise."""
    return scale * (p["units"] / 64) ** 0.8 * (512 / p["batch"]) ** 0.5 * rng.lognormal(0, 0.1)


def _sweep(ledger: Ledger, study: optuna.Study, n: int, scale: float, prune: bool = False) -> float:
    """Run ``n`` random-search trials of known energy into the ledger; their total joules."""
    rng = np.random.default_rng(len(study.study_name))
    total = 0.0
    for _ in range(n):
        t = study.ask()
        p = {"batch": t.suggest_int("batch", 16, 512, log=True)}
        p["units"] = t.suggest_int("units", 64, 1024, log=True)
        j = _joules(p, scale, rng)
        total += j
        fate = "pruned" if prune and t.number == 0 else "complete"
        name = study.study_name
        w = ledger.open_window(name, f"{name}:{t.number}", trial_number=t.number, params=p)
        ledger.finalize(w, Measurement(1.0, {"gpu": j}, {"gpu": Source.MEASURED}), status=fate)
        if fate == "pruned":
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t, 0.0)
    return total


@pytest.fixture
def lab(tmp_path: Path) -> tuple[str, str, Ledger]:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ledger = Ledger(ledger_url)
    for name, scale in (("mnist", 100.0), ("cifar", 3000.0), ("imdb", 800.0)):
        study = optuna.create_study(
            study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=1)
        )
        _sweep(ledger, study, 60, scale)
    return storage, ledger_url, ledger


def test_cost_history_forecasts_the_sweep_left(lab, capsys: pytest.CaptureFixture[str]) -> None:
    storage, ledger_url, ledger = lab
    new = optuna.create_study(
        study_name="new", storage=storage, sampler=optuna.samplers.RandomSampler(seed=7)
    )
    _sweep(ledger, new, 10, 450.0)  # 10 of 100 trials run, at a scale no earlier sweep had
    base = ["report", storage, "--study", "new", "--ledger", ledger_url, "--n-trials", "100"]
    code, out, err = run_cli(capsys, *base, "--format", "json", "--cost-history", ledger_url)
    assert code == 0, err
    f = json.loads(out)["forecast"]
    assert "cost model of 3 earlier sweeps" in f["method"]
    assert any("earlier sweeps (180 complete trials)" in n for n in f["notes"])
    # the truth: the 90 trials the sweep has not run yet, run now
    truth_j = _sweep(ledger, new, 90, 450.0) + sum(  # the 10 already run
        r.energy_j for r in ledger.entries(study="new").head(10).itertuples()
    )
    low, high = f["sweep_total"]["low"]["energy_kwh"], f["sweep_total"]["high"]["energy_kwh"]
    assert low * 3.6e6 <= truth_j <= high * 3.6e6
    assert abs(f["sweep_total"]["estimate"]["energy_kwh"] * 3.6e6 / truth_j - 1) < 0.15
    code, out, _ = run_cli(capsys, *base, "--cost-history", ledger_url)
    assert code == 0 and "cost model of 3 earlier sweeps" in out and "estimate" in out


def test_cost_history_is_not_used_for_a_pruned_sweep(lab, capsys) -> None:
    storage, ledger_url, ledger = lab
    new = optuna.create_study(study_name="new", storage=storage)
    _sweep(ledger, new, 10, 450.0, prune=True)
    code, out, err = run_cli(
        capsys, "report", storage, "--study", "new", "--ledger", ledger_url,
        "--n-trials", "100", "--format", "json", "--cost-history", ledger_url,
    )  # fmt: skip
    f = json.loads(out)["forecast"]
    assert code == 0, err
    assert f["method"].startswith("bootstrap mean")
    assert any("cost history not used" in n for n in f["notes"])


def test_too_little_cost_history_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    storage, ledger_url = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(ledger_url)
    _sweep(ledger, optuna.create_study(study_name="only", storage=storage), 10, 1.0)
    code, out, err = run_cli(
        capsys, "report", storage, "--ledger", ledger_url, "--n-trials", "20",
        "--cost-history", ledger_url,
    )  # fmt: skip
    assert code == 2 and out == ""
    assert "--cost-history: a cost model needs at least 2 earlier studies" in err
    assert len(err.strip().splitlines()) == 1


def test_a_missing_cost_history_is_a_one_line_error_and_creates_nothing(
    tmp_path: Path, capsys
) -> None:
    storage, ledger_url = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    _sweep(Ledger(ledger_url), optuna.create_study(study_name="only", storage=storage), 10, 1.0)
    missing = tmp_path / "mistyped.db"
    code, out, err = run_cli(
        capsys, "report", storage, "--ledger", ledger_url, "--cost-history", f"sqlite:///{missing}"
    )
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no ledger at" in err and "mistyped.db" in err
    assert not missing.exists()


def test_without_history_a_complete_sweep_is_forecast_from_its_own_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, ledger_url = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(ledger_url)
    study = optuna.create_study(
        study_name="first", storage=storage, sampler=optuna.samplers.RandomSampler(seed=3)
    )
    seen_j = _sweep(ledger, study, 20, 50.0)  # 20 of 200: the lab's first sweep, no history
    base = ["report", storage, "--ledger", ledger_url, "--n-trials", "200", "--format", "json"]
    code, out, err = run_cli(capsys, *base)
    assert code == 0, err
    f = json.loads(out)["forecast"]
    assert f["method"].startswith("cost model of this sweep's 20 trials")
    assert any("averaged over its search space" in n and "estimate" in n for n in f["notes"])
    truth_j = seen_j + _sweep(ledger, study, 180, 50.0)
    low, high = f["sweep_total"]["low"]["energy_kwh"], f["sweep_total"]["high"]["energy_kwh"]
    assert low * 3.6e6 <= truth_j <= high * 3.6e6
    assert abs(f["sweep_total"]["estimate"]["energy_kwh"] * 3.6e6 / truth_j - 1) < 0.15


@pytest.mark.parametrize(("n_seen", "prune"), [(4, False), (20, True)])
def test_too_few_or_partial_trials_are_forecast_from_their_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], n_seen: int, prune: bool
) -> None:
    storage, ledger_url = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    study = optuna.create_study(study_name="first", storage=storage)
    _sweep(Ledger(ledger_url), study, n_seen, 50.0, prune=prune)  # 2 parameters: 5 needed
    code, out, err = run_cli(
        capsys, "report", storage, "--ledger", ledger_url, "--n-trials", "100", "--format", "json"
    )
    f = json.loads(out)["forecast"]
    assert code == 0, err
    assert f["method"].startswith("bootstrap mean")
    assert not any("cost history" in n or "search space" in n for n in f["notes"])


def test_a_tpe_sweep_is_forecast_from_its_later_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real TPE: the objective prefers small ``width``, which is also what makes a trial cheap,
    so after its 20 random trials TPE runs cheaper ones; the report notices and forecasts the
    rest from them, and leaves the cost history (random-search draws) out."""
    storage, ledger_url = f"sqlite:///{tmp_path / 'o.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(ledger_url)
    rng = np.random.default_rng(0)

    def run(study: optuna.Study, n: int) -> float:
        total, name = 0.0, study.study_name
        for _ in range(n):
            t = study.ask()
            p = {"width": t.suggest_int("width", 8, 512, log=True)}
            p["batch"] = t.suggest_int("batch", 16, 512, log=True)
            j = 50.0 * p["width"] ** 0.7 * rng.lognormal(0, 0.2)
            w = ledger.open_window(name, f"{name}:{t.number}", trial_number=t.number, params=p)
            m = Measurement(1.0, {"gpu": j}, {"gpu": Source.MEASURED})
            ledger.finalize(w, m, status="complete")
            study.tell(t, float(np.log(p["width"]) + rng.normal(0, 0.1)))
            total += j
        return total

    for name in ("old-a", "old-b"):  # random-search history, for --cost-history
        run(optuna.create_study(study_name=name, storage=storage), 30)
    tpe = optuna.create_study(
        study_name="tpe",
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=20),
    )
    seen_j = run(tpe, 40)
    base = ["report", storage, "--study", "tpe", "--ledger", ledger_url, "--n-trials", "200"]
    code, out, err = run_cli(capsys, *base, "--format", "json", "--cost-history", ledger_url)
    assert code == 0, err
    f = json.loads(out)["forecast"]
    assert f["method"].startswith("bootstrap mean of the later 20 of 40 finished trials")
    assert any("later half of the finished trials cost differently" in n for n in f["notes"])
    assert any("cost history not used" in n for n in f["notes"])
    truth_j = seen_j + run(tpe, 160)
    estimate_j = f["sweep_total"]["estimate"]["energy_kwh"] * 3.6e6
    all_mean_j = seen_j + 160 * seen_j / 40  # what the mean of all 40 would say
    assert abs(estimate_j / truth_j - 1) < abs(all_mean_j / truth_j - 1)
    assert abs(estimate_j / truth_j - 1) < 0.35

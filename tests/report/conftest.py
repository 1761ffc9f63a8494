"""Fixtures for the report tests: real Optuna studies, real ledgers, Ray-style folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.cli import main
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``hpaudit ARGV...`` in this process: (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def objective_value(x: float, y: int, opt: str) -> float:
    return (x - 0.3) ** 2 + 0.01 * y + (0.2 if opt == "sgd" else 0.0)


def energy_j(x: float, y: int) -> float:
    return 1000.0 * (1 + y)  # energy depends on y only


def make_metered_study(
    storage: str, ledger_url: str | None, name: str = "sweep", n: int = 24, attrs: bool = False
) -> optuna.Study:
    """A real study whose trials are also ledger windows (and/or carry energy user attrs)."""
    led = Ledger(ledger_url) if ledger_url else None
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=1)
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_int("y", 1, 8)
        opt = trial.suggest_categorical("opt", ["adam", "sgd"])
        for step in range(3):
            trial.report(objective_value(x, y, opt) + 1.0 / (step + 1), step)
        e = energy_j(x, y)
        if led is not None:
            w = led.open_window(
                name,
                f"{name}:{trial.number}",
                trial_number=trial.number,
                params=trial.params,
                devices=["gpu:0"],
            )
            status = "pruned" if trial.number % 7 == 6 else "complete"
            led.finalize(
                w,
                Measurement(2.0, {"gpu:0": e}, {"gpu:0": Source.MEASURED}),
                status=status,
                value=objective_value(x, y, opt),
            )
        if attrs:
            trial.set_user_attr("energy_kwh", e / 3.6e6)
            trial.set_user_attr("co2e_kg", e / 3.6e6 * 1.58 * 0.4)
            trial.set_user_attr("energy_source", "estimated")
        if trial.number % 7 == 6:
            raise optuna.TrialPruned()
        return objective_value(x, y, opt)

    study.optimize(objective, n_trials=n)
    if led is not None:
        led.close()
    return study


@pytest.fixture(scope="session")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(optuna storage URL, ledger URL) of a 24-trial metered study, shared read-only: the
    trials are ledger windows and also carry the integration's energy user attributes."""
    tmp = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{tmp / 'study.db'}"
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    make_metered_study(storage, ledger, attrs=True)
    return storage, ledger


def write_ray_folder(root: Path, n: int = 6, *, metric: str = "loss") -> Path:
    """A Ray Tune experiment folder as Tune writes it: one folder per trial with params.json
    and result.json (JSON lines); a pickle that must never be opened."""
    exp = root / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"\x80\x04not a pickle anyone should open")
    for i in range(n):
        lr = 10 ** (-1 - 3 * i / max(1, n - 1))
        d = exp / f"train_fn_{i:05d}_{i}_lr={lr:.4g}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps({"lr": lr, "layers": 1 + i % 3}))
        iters = 2 if i == 1 else 4  # trial 1 stopped early by a scheduler
        lines = []
        for it in range(1, iters + 1):
            lines.append(
                json.dumps(
                    {
                        metric: (math.log10(lr) + 2.5) ** 2 + 1.0 / it,
                        "training_iteration": it,
                        "timestamp": 1_700_000_000 + 100 * i + 10 * it,
                        "time_this_iter_s": 10.0,
                        "trial_id": f"t{i:05d}",
                        # Tune marks the last result done, of a trial it stopped too
                        "done": it == iters,
                        "hostname": "node-1",
                        # keys hpsearch_budget.ray.metered adds: the window's cost so far
                        "energy_j": 3600.0 * it,
                        "co2e_g": 0.4 * it,
                        "gpu_s": 10.0 * it,
                        "energy_source": "estimated",
                        "hpaudit_study": "exp",
                        "hpaudit_window": i + 1,
                    }
                )
            )
        (d / "result.json").write_text("\n".join(lines) + "\n")
    (exp / f"train_fn_{n:05d}_broken").mkdir()  # a trial that never reported
    return exp

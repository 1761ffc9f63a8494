"""Benchmark ``hpaudit report`` on a 10,000-trial, 8-parameter metered study.

Targets (issue 8): the full report (importances for objective and energy included) in at most
5 s when read from the ledger; from an Optuna SQLite storage, at most 1.1x the time Optuna
itself takes to load the study's trials (10 reported steps each).

Data: the Optuna storage's schema is created by Optuna, then its tables are filled with bulk
SQL inserts (``study.add_trials`` runs at ~80 ms per trial on this shared machine, ~13 min for
10,000); the ledger is written through the real :class:`Ledger` API. Both are cached under
``tmp/bench_report/`` (gitignored) and reused.

    python experiments/bench_report.py            # full: 10,000 trials, writes results
    python experiments/bench_report.py --quick    # 300 trials, a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import sqlalchemy as sa
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.report import build_report, load_sweep, render

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "tmp" / "bench_report"
RESULTS = REPO / "experiments" / "results" / "bench_report.md"
STUDY = "bench"
STEPS = 10
DISTS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "wd": FloatDistribution(1e-6, 1e-2, log=True),
    "dropout": FloatDistribution(0.0, 0.5),
    "momentum": FloatDistribution(0.8, 0.99),
    "layers": IntDistribution(1, 8),
    "width": IntDistribution(32, 1024, log=True),
    "batch": CategoricalDistribution([32, 64, 128, 256]),
    "opt": CategoricalDistribution(["adam", "sgd", "adamw"]),
}


def _trial(rng: random.Random, number: int) -> dict:
    p = {
        "lr": 10 ** rng.uniform(-5, -1),
        "wd": 10 ** rng.uniform(-6, -2),
        "dropout": rng.uniform(0, 0.5),
        "momentum": rng.uniform(0.8, 0.99),
        "layers": rng.randint(1, 8),
        "width": round(2 ** rng.uniform(5, 10)),
        "batch": rng.choice([32, 64, 128, 256]),
        "opt": rng.choice(["adam", "sgd", "adamw"]),
    }
    loss = (math.log10(p["lr"]) + 3) ** 2 / 4 + 0.1 * p["dropout"] + rng.gauss(0, 0.05)
    pruned = rng.random() < 0.3
    steps = rng.randint(2, STEPS - 1) if pruned else STEPS
    # energy ~ width x layers x steps: what the energy importance should find
    energy_j = 50.0 * p["width"] * p["layers"] * steps / STEPS * rng.uniform(0.9, 1.1)
    return {
        "number": number,
        "params": p,
        "loss": loss,
        "pruned": pruned,
        "steps": steps,
        "energy_j": energy_j,
        "wall_s": 30.0 * steps,
    }


def make_optuna(url: str, trials: list[dict]) -> None:
    """Optuna creates the schema and the study; the rows go in with one bulk insert per table."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name=STUDY, storage=url)
    engine = sa.create_engine(url)
    t0 = datetime(2026, 1, 1)
    with engine.begin() as conn:
        sid = conn.execute(
            sa.text("SELECT study_id FROM studies WHERE study_name=:n"), {"n": STUDY}
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, "
                "datetime_complete) VALUES (:id, :n, :s, :state, :a, :b)"
            ),
            [
                {
                    "id": t["number"] + 1,
                    "n": t["number"],
                    "s": sid,
                    "state": "PRUNED" if t["pruned"] else "COMPLETE",
                    "a": t0 + timedelta(seconds=300 * t["number"]),
                    "b": t0 + timedelta(seconds=300 * t["number"] + t["wall_s"]),
                }
                for t in trials
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) "
                "VALUES (:id, :k, :v, :d)"
            ),
            [
                {
                    "id": t["number"] + 1,
                    "k": k,
                    "v": DISTS[k].to_internal_repr(v),
                    "d": distribution_to_json(DISTS[k]),
                }
                for t in trials
                for k, v in t["params"].items()
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_values (trial_id, objective, value, value_type) "
                "VALUES (:id, 0, :v, 'FINITE')"
            ),
            [{"id": t["number"] + 1, "v": t["loss"]} for t in trials if not t["pruned"]],
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
                "intermediate_value_type) VALUES (:id, :s, :v, 'FINITE')"
            ),
            [
                {"id": t["number"] + 1, "s": s, "v": t["loss"] + 1 / (s + 1)}
                for t in trials
                for s in range(t["steps"])
            ],
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES (:id, :k, :v)"
            ),
            [
                {"id": t["number"] + 1, "k": k, "v": json.dumps(v)}
                for t in trials
                for k, v in (
                    ("energy_kwh", t["energy_j"] / 3.6e6),
                    ("co2e_kg", t["energy_j"] / 3.6e6 * 0.7),
                    ("energy_source", "replayed"),
                    ("hpaudit_window", t["number"] + 1),
                )
            ],
        )
    engine.dispose()


def make_ledger(url: str, trials: list[dict]) -> None:
    led = Ledger(url)
    for t in trials:
        w = led.open_window(
            STUDY,
            f"{STUDY}:{t['number']}",
            trial_number=t["number"],
            params=t["params"],
            devices=["gpu:0"],
        )
        m = Measurement(t["wall_s"], {"gpu:0": t["energy_j"]}, {"gpu:0": Source.REPLAYED})
        led.finalize(
            w,
            m,
            status="pruned" if t["pruned"] else "complete",
            value=None if t["pruned"] else t["loss"],
        )
    led.close()


def _usable(ledger_url: str) -> bool:
    """A cached ledger written by an older schema is rebuilt rather than trusted."""
    try:
        led = Ledger(ledger_url)
        led.entries(STUDY).head(1)
        led.close()
        return True
    except Exception:
        return False


def data(n: int, cache: Path = CACHE) -> tuple[str, str]:
    folder = cache / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    study_db, ledger_db = folder / "study.db", folder / "ledger.db"
    done = folder / "done"
    if not (done.exists() and _usable(f"sqlite:///{ledger_db}")):
        for f in folder.glob("*.db*"):
            f.unlink()
        rng = random.Random(0)
        trials = [_trial(rng, i) for i in range(n)]
        t0 = time.perf_counter()
        make_optuna(f"sqlite:///{study_db}", trials)
        make_ledger(f"sqlite:///{ledger_db}", trials)
        print(f"generated {n} trials in {time.perf_counter() - t0:.1f} s into {folder}")
        done.write_text("ok\n")
    return f"sqlite:///{study_db}", f"sqlite:///{ledger_db}"


def best_of(fn, repeat: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def optuna_load(url: str) -> int:
    storage = optuna.storages.RDBStorage(url)
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    return len(trials)


def full_report(source: str, **kw: object) -> int:
    report = build_report(load_sweep(source, **kw))  # type: ignore[arg-type]
    assert {s.target for s in report.sensitivity if s.importances} == {"objective", "energy"}
    return len(render(report, "html")) + len(render(report, "json"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 trials, one repeat, no results file")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=CACHE, help="where generated data is kept")
    args = ap.parse_args(argv)
    n = args.trials or (300 if args.quick else 10_000)
    repeat = 1 if args.quick else args.repeat
    study_url, ledger_url = data(n, args.cache)
    assert optuna_load(study_url) == n
    full_report(ledger_url, direction="minimize")  # warm-up: imports, caches
    t_optuna, all_optuna = best_of(lambda: optuna_load(study_url), repeat)
    t_load, all_load = best_of(lambda: load_sweep(study_url), repeat)
    t_study, all_study = best_of(lambda: full_report(study_url), repeat)
    t_ledger, all_ledger = best_of(lambda: full_report(ledger_url, direction="minimize"), repeat)
    ratio = t_study / t_optuna
    lines = [
        f"# bench_report: {n} trials x 8 parameters x {STEPS} steps",
        "",
        f"Command: `python experiments/bench_report.py{' --quick' if args.quick else ''}` "
        f"(median of {repeat}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.node()}, "
        "2 shared cores: timings are noisy)",
        "",
        "| measurement | median s | runs (s) | target |",
        "|---|---|---|---|",
        f"| Optuna `load_study().get_trials()` | {t_optuna:.2f} | {_l(all_optuna)} | baseline |",
        f"| hpaudit `load_sweep` (SQL, one query per table) | {t_load:.2f} | {_l(all_load)} | |",
        f"| full report from Optuna SQLite (load + R&D + PED-ANOVA x2 + EVP + html + json) | "
        f"{t_study:.2f} | {_l(all_study)} | <= 1.1 x baseline: **{ratio:.2f}x** |",
        f"| full report from the ledger | {t_ledger:.2f} | {_l(all_ledger)} | <= 5 s |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        RESULTS.write_text(text)
    return 0


def _l(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


if __name__ == "__main__":
    sys.exit(main())

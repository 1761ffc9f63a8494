"""A lab-wide ledger after months of use: is every reader still usable at 300,000 windows?

Builds a ledger through the public :class:`Ledger` API (every row hash-chained, so ``verify``
holds): ``--studies`` x ``--windows`` tuning windows (complete / pruned / failed / killed), a
final training, seed reruns and idle rows per study, 6 projects, 10 users, opening times spread
over the 6 months before now (the ledger's clock is moved by hand while building, as the
tests do). Then measures, each in a fresh process under ``/usr/bin/time -v`` (wall seconds and
peak RSS), the CLI readers; in this process the hot paths a sweep runs against the ledger
(``open_window(reserve=...)`` under a study budget and a project-monthly cap, ``spent``);
and the per-trial time of a 200-trial metered Optuna sweep under a policy cap, on an empty
ledger and on the big one (a sweep's per-trial cost must not grow with the ledger).

    python experiments/ledger_scale.py                    # full: 300 x 1,000 windows
    python experiments/ledger_scale.py --quick            # seconds: smoke test
    python experiments/ledger_scale.py --pg-url postgresql+psycopg://postgres@127.0.0.1:55501/postgres
    python experiments/ledger_scale.py --keep /tmp/big.db # build once, keep the file
    python experiments/ledger_scale.py --reuse /tmp/big.db  # measure a kept ledger again
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.ledger import _ledger as ledger_module
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.policy import month_bounds

DAY_S = 86_400.0
PROJECTS = tuple(f"proj{i}" for i in range(6))
USERS = tuple(f"user{i}" for i in range(10))
_FATES = ("complete",) * 6 + ("pruned",) * 3 + ("failed", "killed")
POLICY = """on_exceed = "prune"
[caps.project]
co2e_kg = 1e9
[caps.study]
co2e_kg = 1e9
"""


def build(url: str, studies: int, windows: int, seed: int = 0) -> dict[str, Any]:
    """Fill ``url`` with ``studies`` x ``windows`` tuning rows (+ final / seed / idle rows)."""
    rng = random.Random(seed)
    end = time.time() - 3600.0
    start = end - 180 * DAY_S
    clock = [start]
    real_now = ledger_module._now
    ledger_module._now = lambda: clock[0]  # the ledger's clock, moved by hand
    t0, rows = time.perf_counter(), 0
    sources = {"cpu": Source.ESTIMATED, "gpu": Source.MEASURED}
    try:
        ledger = Ledger(url)
        for s in range(studies):
            clock[0] = start + (end - start - 1.5 * windows * 60.0) * s / max(studies - 1, 1)
            study = f"study{s:04d}"
            who = {"project": PROJECTS[s % len(PROJECTS)], "user": USERS[s % len(USERS)]}
            for i in range(windows):
                phase, fate = _row_kind(rng, i, windows)
                w = ledger.open_window(
                    study, f"{study}:{i}", trial_number=i if phase == "tuning" else None,
                    phase=phase, params={"lr": rng.random(), "layers": rng.randint(1, 8)},
                    devices=("gpu0",) if phase != "idle" else (), **who,
                )  # fmt: skip
                clock[0] += rng.uniform(20.0, 100.0)
                j = rng.uniform(1e4, 1e6)
                ledger.finalize(
                    w, Measurement(60.0, {"cpu": 0.2 * j, "gpu": 0.8 * j}, sources),
                    status=fate, value=rng.random() if fate == "complete" else None,
                )  # fmt: skip
                rows += 1
        ledger.close()
    finally:
        ledger_module._now = real_now
    return {"rows": rows, "studies": studies, "build_s": time.perf_counter() - t0}


def _row_kind(rng: random.Random, i: int, windows: int) -> tuple[str, str]:
    if i >= windows - 4:  # each study ends with its final training and seed reruns
        return ("final" if i == windows - 4 else "seed"), "complete"
    if i % 50 == 49:
        return "idle", "complete"
    return "tuning", rng.choice(_FATES)


def cli_timings(
    url: str, study: str, project: str, tmp: Path, *, quick: bool = False
) -> list[dict[str, Any]]:
    """Each reader in a fresh process: wall seconds and peak RSS (``quick``: every 4th)."""
    policy = tmp / "hpaudit.toml"
    policy.write_text(POLICY)
    month = datetime.now(UTC).strftime("%Y-%m")
    since, until = month_bounds(datetime.now(UTC))
    cases = [
        ("ledger studies", ["ledger", "studies"]),
        ("ledger show", ["ledger", "show"]),
        ("ledger show --study", ["ledger", "show", "--study", study]),
        ("verify", ["verify"]),
        ("verify --study", ["verify", "--study", study]),
        ("export csv", ["export", "--format", "csv", "--out", str(tmp / "a.csv")]),
        ("export json", ["export", "--format", "json", "--out", str(tmp / "a.json")]),
        ("export codecarbon", ["export", "--format", "codecarbon", "--out", str(tmp / "c.csv")]),
        ("export csv --since/--until (this month)",
         ["export", "--format", "csv", "--out", str(tmp / "m.csv"),
          "--since", f"{since:%Y-%m-%dT%H:%M}+00:00", "--until", f"{until:%Y-%m-%dT%H:%M}+00:00"]),
        ("export csv --study", ["export", "--format", "csv", "--study", study, "--out",
                                str(tmp / "s.csv")]),
        ("budget status (month, all caps)", ["budget", "status", "--policy", str(policy),
                                             "--month", month]),
        ("budget status --project", ["budget", "status", "--policy", str(policy), "--month",
                                     month, "--project", project]),
        ("report --study (text)", ["report", url, "--study", study, "--direction", "minimize"]),
        ("report --study (html)", ["report", url, "--study", study, "--direction", "minimize",
                                   "--format", "html",
                                   "--out", str(tmp / "r.html")]),
        ("policy check", ["policy", "check", str(policy)]),
    ]  # fmt: skip
    return [_timed(name, args, url) for name, args in cases[:: 4 if quick else 1]]


def _timed(name: str, args: list[str], url: str) -> dict[str, Any]:
    env = {**os.environ, "HPAUDIT_LEDGER": url, "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "hpsearch_budget", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert wall and rss, done.stderr[-2000:]
    h, m, s = wall.groups()
    return {
        "what": f"hpaudit {name}",
        "s": int(h or 0) * 3600 + int(m) * 60 + float(s),
        "peak_mib": int(rss.group(1)) / 1024,
        "exit": done.returncode,
    }


def hot_paths(url: str, project: str, repeat: int) -> list[dict[str, Any]]:
    """What a sweep's workers run per trial, on a fresh Ledger (first call) and after."""
    since, until = month_bounds(datetime.now(UTC))
    month = Scope(project=project, since=since, until=until)
    big = Cost(1e18, 1e18, 1e18, 1e18)
    cases = {
        "open_window(reserve) study budget": [(Scope(study="hot-new"), big)],
        "open_window(reserve) study budget + project-month cap": [
            (Scope(study="hot-new"), big), (month, big)],
    }  # fmt: skip
    out = []
    for name, limits in cases.items():
        ledger = Ledger(url)
        times = []
        for i in range(repeat):
            t0 = time.perf_counter()
            w, _ = ledger.open_window("hot-new", f"hot:{name}:{i}", project=project,
                                      reserve=(Cost(1.0, 1.0, 0.0, 0.0), limits))  # fmt: skip
            times.append(time.perf_counter() - t0)
            ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")
        ledger.close()
        out.append(_row(name, times))
    for name, scope in (
        ("spent(project-month)", month),
        ("spent(study)", Scope(study="study0000")),
    ):
        ledger = Ledger(url, create=False)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            ledger.spent(scope)
            times.append(time.perf_counter() - t0)
        ledger.close()
        out.append(_row(name, times))
    return out


def _row(name: str, times: list[float]) -> dict[str, Any]:
    rest = times[1:] or times
    return {"what": name, "first_ms": 1e3 * times[0], "median_ms": 1e3 * statistics.median(rest)}


_TIMED = ("open_window", "checkpoint", "finalize", "try_reserve", "spent", "committed",
          "entries", "reap", "study_totals", "studies")  # fmt: skip


class _LedgerClock:
    """Seconds spent inside the public Ledger methods (outermost calls only), per call site."""

    def __init__(self) -> None:
        self.total, self._depth, self._saved = 0.0, 0, {}

    def __enter__(self) -> _LedgerClock:
        for name in _TIMED:
            if hasattr(Ledger, name):
                self._saved[name] = getattr(Ledger, name)
                setattr(Ledger, name, self._wrap(self._saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(Ledger, name, fn)

    def _wrap(self, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.total += time.perf_counter() - t0

        return timed


def sweep(url: str, project: str, trials: int, tmp: Path) -> dict[str, Any]:
    """A new study's ``trials`` tiny metered trials under a policy's caps: wall ms per trial
    and ms per trial inside Ledger calls (random sampler: no TPE time growing per trial)."""
    import optuna

    from hpsearch_budget.optuna import optimize

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    policy = tmp / "sweep.toml"
    policy.write_text(POLICY)
    study = optuna.create_study(
        study_name=f"sweep-{time.time_ns()}", sampler=optuna.samplers.RandomSampler(seed=0)
    )

    marks: list[float] = []  # Ledger seconds so far, at each trial's start

    def objective(trial: optuna.Trial) -> float:
        marks.append(clock.total)
        x = trial.suggest_float("x", -10, 10)
        trial.report(x * x, 0)
        return x * x

    t0 = time.perf_counter()
    clock = _LedgerClock()
    with clock:
        optimize(study, objective, budget=Budget(co2e_kg=1e9), ledger=url, n_trials=trials,
                 policy=str(policy), project=project, checkpoint_interval_s=30.0)  # fmt: skip
    wall = time.perf_counter() - t0
    steady = [b - a for a, b in itertools.pairwise(marks[1:])]  # after trial 1
    return {
        "trials": trials,
        "ms_per_trial": 1e3 * wall / trials,
        "ledger_ms_per_trial": 1e3 * clock.total / trials,
        "ledger_ms_median_trial": 1e3 * statistics.median(steady),
        "ledger_ms_until_trial_1": 1e3 * marks[1],  # opening, policy admit, first checks
    }


def _size(url: str) -> float | None:
    path = url.removeprefix("sqlite:///")
    return os.path.getsize(path) / 2**20 if path != url and os.path.exists(path) else None


def run_backend(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    project = PROJECTS[0]
    # PostgreSQL: the given database, measured empty before it is filled.
    empty = f"sqlite:///{tmp / 'empty.db'}" if url.startswith("sqlite") else url
    sweep_empty = sweep(empty, project, args.sweep_trials, tmp)
    built = {} if args.reuse else build(url, args.studies, args.windows)
    t0 = time.perf_counter()
    Ledger(url).close()  # a writer of this version: adds any index an older ledger lacks
    built["open_as_writer_s"] = time.perf_counter() - t0
    return {
        "url": url.split("@")[-1],
        "build": built,
        "file_mib": _size(url),
        "cli": cli_timings(url, "study0000", project, tmp, quick=args.quick),
        "hot": hot_paths(url, project, args.repeat),
        "sweep_empty": sweep_empty,
        "sweep_big": sweep(url, project, args.sweep_trials, tmp),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 studies x 40 windows, 10 trials")
    p.add_argument("--studies", type=int, default=300)
    p.add_argument("--windows", type=int, default=1000)
    p.add_argument("--sweep-trials", type=int, default=200)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--keep", type=Path, help="build the SQLite ledger here and keep it")
    p.add_argument("--reuse", type=Path, help="measure this kept SQLite ledger (no build)")
    p.add_argument("--pg-url", help="also measure PostgreSQL (an empty database; it is filled)")
    p.add_argument("--out", type=Path, help="JSON results here")
    args = p.parse_args()
    if args.quick:
        args.studies, args.windows, args.sweep_trials, args.repeat = 3, 40, 10, 5
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores (shared)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = args.reuse or args.keep or tmp / "big.db"
        results["sqlite"] = run_backend(f"sqlite:///{path}", args, tmp)
        if args.pg_url:
            results["postgresql"] = run_backend(args.pg_url, args, tmp)
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

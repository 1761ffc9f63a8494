"""``make demo``: a real budgeted sweep, end to end, in about 20 s on 2 cores.

A scikit-learn ``MLPClassifier`` on the handwritten digits scikit-learn ships, tuned by Optuna
(TPE) and trained one epoch at a time with ``partial_fit``, so each epoch reports its
validation accuracy and Optuna's MedianPruner -- and the budget -- can stop a trial early. The
study (SQLite) and the energy ledger (SQLite) live in ``./hpaudit-demo/``. A CO2e budget binds
before the trial limit: the sweep ends when what is left cannot pay for a typical trial.

Energy comes from the best meter of the machine; without hardware counters (CI, laptops, VMs)
it is an estimate from CPU time, and every figure below says so.

Run:  python -m hpsearch_budget.demo [--folder hpaudit-demo] [--budget-g 0.05] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import NoReturn

import optuna

from hpsearch_budget.budget import Budget
from hpsearch_budget.errors import HpauditError, HpauditInputError
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.ledger._schema import windows
from hpsearch_budget.optuna import BudgetedRun, optimize

STUDY = "digits-mlp"


def make_objective(epochs: int):
    """The objective: an MLP trained epoch by epoch, reporting validation accuracy."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_valid, y_train, y_valid = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_valid = scaler.transform(x_train), scaler.transform(x_valid)
    classes = np.unique(y)

    def objective(trial: optuna.Trial) -> float:
        width = trial.suggest_int("hidden_units", 16, 256, log=True)
        depth = trial.suggest_int("layers", 1, 3)
        clf = MLPClassifier(
            hidden_layer_sizes=(width,) * depth,
            learning_rate_init=trial.suggest_float("learning_rate", 1e-4, 3e-1, log=True),
            alpha=trial.suggest_float("l2", 1e-6, 1e-1, log=True),
            batch_size=trial.suggest_categorical("batch_size", [16, 32, 64, 128]),
            random_state=trial.number,
        )
        accuracy = 0.0
        for epoch in range(epochs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.partial_fit(x_train, y_train, classes=classes)
            accuracy = float(clf.score(x_valid, y_valid))
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    return objective


#: Written into the demo's folder: only a folder holding it is ever cleared for a new run.
MARKER = ".hpaudit-demo"
_DATABASES = ("study.db", "ledger.db")
_LEDGER_STUDIES = f"SELECT DISTINCT study FROM {windows.name}"


def fresh_folder(folder: Path) -> None:
    """Make ``folder`` ready for a new run: create it, or clear the databases of an earlier
    demo run there. Databases the demo did not write (no marker file) are never deleted."""
    if folder.exists() and not folder.is_dir():
        raise HpauditInputError(f"--folder {folder} is a file; pass a folder")
    found = [n for n in _DATABASES if (folder / n).exists()]
    if found and not (folder / MARKER).exists() and not _only_demo_studies(folder, found):
        raise HpauditInputError(
            f"{folder} already holds {' and '.join(found)} that this demo did not write; "
            "pass another --folder (each demo run starts fresh and would delete them)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by python -m hpsearch_budget.demo\n")
    for name in _DATABASES:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)


def _only_demo_studies(folder: Path, found: list[str]) -> bool:
    """Whether the databases hold the demo's study and nothing else (an earlier demo run
    from before the marker file existed)."""
    queries = {"study.db": "SELECT study_name FROM studies", "ledger.db": _LEDGER_STUDIES}
    try:
        for name in found:
            with contextlib.closing(
                sqlite3.connect(f"file:{folder / name}?mode=ro", uri=True)
            ) as db:
                if {row[0] for row in db.execute(queries[name])} - {STUDY}:
                    return False
    except sqlite3.Error:  # not SQLite, or not Optuna's / hpaudit's tables: not the demo's
        return False
    return True


def run_demo(folder: Path, budget: Budget, epochs: int, max_trials: int, timeout_s: float):
    """Run the budgeted sweep in ``folder`` (fresh each time); returns the study and summary."""
    fresh_folder(folder)
    storage = f"sqlite:///{folder / 'study.db'}"
    ledger = Ledger(f"sqlite:///{folder / 'ledger.db'}")
    study = optuna.create_study(
        study_name=STUDY,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=3),
    )
    run = optimize(
        study,
        make_objective(epochs),
        budget=budget,
        ledger=ledger,
        n_trials=max_trials,
        timeout=timeout_s,
        max_steps=epochs,
        project="hpaudit-demo",
        n_jobs=2,  # two trials at a time share the budget (and the meter, split between them)
    )
    return study, run, storage, ledger


def summary(study: optuna.Study, run: BudgetedRun) -> str:
    """What was spent, what was pruned and why, and the best configuration."""
    est = "" if run.source == "measured" else f" [{run.source}]"
    spent, budget_g = run.spent, (run.budget.co2e_kg or 0.0) * 1000
    lines = [
        "",
        "== hpaudit demo: budgeted sweep ==",
        f"budget   {budget_g:.3g} g CO2e; spent {spent.co2e_g:.3g} g CO2e "
        f"({100 * run.used_fraction:.0f}%), {spent.energy_kwh * 1000:.3g} Wh at the device{est}",
        f"ended    {run.stopped or 'trial limit or timeout reached before the budget bound'}",
        f"trials   {run.n_trials}: {run.n_complete} complete, {run.n_pruned_other} pruned as "
        f"unpromising, {run.n_pruned_budget} pruned by the budget, {run.n_failed} failed",
    ]
    if run.used_fraction > 1.0:
        lines.append(
            f"         over by {spent.co2e_g - budget_g:.2g} g: the documented bound is one "
            "checkpoint interval (here one epoch) of each running trial"
        )
    reasons = Counter(
        str(t.user_attrs.get("hpaudit_prune_reason", "?"))
        for t in study.trials
        if t.state == optuna.trial.TrialState.PRUNED
    )
    for reason, n in reasons.most_common():
        lines.append(f"  pruned x{n}: {reason}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()
        )
        lines += [
            f"best     trial {best.number}: validation accuracy {best.value:.4f}",
            f"         {params}",
            f"         cost {best.user_attrs['co2e_kg'] * 1e6:.3g} mg CO2e, "
            f"{best.user_attrs['energy_kwh'] * 1e6:.3g} mWh{est}",
        ]
    return "\n".join(lines)


def full_report(storage: str, ledger: Ledger, folder: Path) -> str:
    """Engineer E's ``hpaudit report`` of the study, as text (also saved as Markdown)."""
    try:
        from hpsearch_budget.report import build_report, load_sweep, render, write_atomic
    except ImportError as exc:
        return f"(the full report is not available in this build: {exc})"
    rep = build_report(load_sweep(storage, study=STUDY, ledger=ledger.url))
    write_atomic(folder / "report.md", render(rep, "md"))
    write_atomic(folder / "report.html", render(rep, "html"))
    return render(rep, "text")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, as every hpaudit error (no usage)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m hpsearch_budget.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=Path("hpaudit-demo"),
        help="where the study, ledger and reports go (default hpaudit-demo)",
    )
    parser.add_argument(
        "--budget-g",
        type=float,
        default=None,
        help="CO2e budget in grams (default 0.05; 0.004 with --quick)",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default 12; 3 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings (tests)")
    parser.add_argument("--no-report", action="store_true", help="skip the full report")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")  # exit 2, one line of error
    epochs = args.epochs or (3 if args.quick else 12)
    budget_g = args.budget_g if args.budget_g is not None else (0.004 if args.quick else 0.05)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.monotonic()
    try:
        budget = Budget(co2e_kg=budget_g / 1000.0)  # checked before anything is written
        study, run, storage, ledger = run_demo(
            args.folder, budget, epochs, max_trials=300, timeout_s=20 if args.quick else 90
        )
        print(summary(study, run))
        print(f"took     {time.monotonic() - started:.0f} s; study {storage}, ledger {ledger.url}")
        if not args.no_report:
            print("\n== hpaudit report ==")
            print(full_report(storage, ledger, args.folder))
            print(f"(also written to {args.folder / 'report.md'} and report.html)")
    except HpauditError as exc:
        print(f"hpaudit demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

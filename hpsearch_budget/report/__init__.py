"""Reports: read a sweep from any source, assemble a typed report, render it.

>>> import optuna, tempfile, pathlib
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> url = f"sqlite:///{pathlib.Path(tempfile.mkdtemp()) / 'study.db'}"
>>> study = optuna.create_study(study_name="demo", storage=url)
>>> study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=8)
>>> report = build_report(load_sweep(url))
>>> report.schema_version, report.study.n_trials, report.sensitivity[0].evaluator
(2, 8, 'ped-anova')
>>> "R&D cost" in render(report, "text")
True
"""

from hpsearch_budget.report._assemble import build_report, default_assumptions
from hpsearch_budget.report._model import SCHEMA_VERSION, Report
from hpsearch_budget.report._render import FORMATS, render
from hpsearch_budget.report._sources import (
    load_ledger,
    load_optuna_journal,
    load_optuna_rdb,
    load_ray,
    load_sweep,
    sweep_from_frozen,
)
from hpsearch_budget.report._write import write_atomic

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "Report",
    "build_report",
    "default_assumptions",
    "load_ledger",
    "load_optuna_journal",
    "load_optuna_rdb",
    "load_ray",
    "load_sweep",
    "render",
    "sweep_from_frozen",
    "write_atomic",
]

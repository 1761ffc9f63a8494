"""The energy ledger: durable, concurrent, crash-safe, tamper-evident.

One row per trial window in SQLite (default, WAL) or PostgreSQL, through SQLAlchemy Core;
finished rows are hash-chained per study. See :class:`Ledger`.
"""

from hpsearch_budget.ledger._chain import Problem, VerifyReport
from hpsearch_budget.ledger._codecarbon import CODECARBON_COLUMNS
from hpsearch_budget.ledger._export import FORMATS, export_chunks, export_frame
from hpsearch_budget.ledger._ledger import ENTRY_COLUMNS, MISSED_INTERVALS, Ledger, default_carbon
from hpsearch_budget.ledger._schema import FINISHED, PHASES, SCHEMA_VERSION, STATUSES
from hpsearch_budget.ledger._scope import Scope

__all__ = [
    "CODECARBON_COLUMNS",
    "ENTRY_COLUMNS",
    "FINISHED",
    "FORMATS",
    "MISSED_INTERVALS",
    "PHASES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Ledger",
    "Problem",
    "Scope",
    "VerifyReport",
    "default_carbon",
    "export_chunks",
    "export_frame",
]

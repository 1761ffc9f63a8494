"""A fresh Optuna study whose name the ledger already holds: say so before it runs.

The ledger knows a study by its name. A study created again under a name the ledger has seen
(an in-memory study re-run in a notebook, a study file deleted and the script run again, both on
the default ``hpaudit.db``) inherits the earlier study's rows: they count in its spent, so its
budget starts partly used, and a report of it from the ledger mixes both. A study's trial 0 is
the moment to tell: a resumed study never runs a trial 0 again, a new one always does.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd
from optuna.trial import Trial

from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger._shareable import shareable_url

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)


def warn_if_name_reused(ledger: Ledger, trial: Trial) -> None:
    """Warn when ``trial`` is trial 0 of its study and the ledger already holds tuning windows
    of a study of that name (one ledger read, at trial 0 only)."""
    if trial.number != 0:
        return
    name = trial.study.study_name
    try:
        rows = ledger.entries(study=name)
    except LedgerError:  # the trial's own ledger calls will say what is wrong
        return
    earlier = _earlier_windows(rows, trial)
    if earlier.empty:
        return
    _log.warning(
        "ledger %s already holds %d trial window(s) of an earlier study named %r (from %s "
        "on): they count in this study's spent, so its budget starts partly used, and a "
        "report from the ledger alone mixes both. Give the study a new name, or meter it into "
        "another ledger, unless you mean to continue that study",
        shareable_url(ledger.url),
        len(earlier),
        name,
        f"{earlier['started_at'].min():%Y-%m-%d %H:%M} UTC",
    )


def _earlier_windows(rows: pd.DataFrame, trial: Trial) -> pd.DataFrame:
    """The tuning windows of an earlier study in ``rows`` (the ledger's rows of ``trial``'s
    study name; ``trial`` is trial 0, its window not open yet).

    Only an earlier study has a trial 0 window here. Other workers of this very study (threads
    with ``n_jobs > 1``, processes, a batch of asked trials run out of order) may already have
    opened windows of its trials 1, 2, ...: those are not an earlier study's. Its windows are
    the ones started before this trial 0 was created (Optuna numbers trials as it creates them).
    """
    if rows.empty:
        return rows
    tuning = rows[rows["phase"] == "tuning"]
    if not (tuning["trial_number"] == 0).any():
        return tuning.iloc[:0]
    # Optuna's datetime_start is naive local time; the ledger's times are UTC.
    created = pd.Timestamp((trial.datetime_start or datetime.now()).astimezone(UTC))
    before = tuning[tuning["started_at"] < created]
    # Another machine's clock may run ahead: the earlier trial 0 itself is still the earlier's.
    return before if not before.empty else tuning[tuning["trial_number"] == 0]

"""Record on the Optuna study which ledger its trials are metered into, and under which name.

``hpaudit report sqlite:///study.db`` then finds the ledger without ``--ledger`` (see
:mod:`hpsearch_budget.report._recorded_ledger`), also for a copy of the study under another
name (``optuna.copy_study(..., to_study_name=...)`` copies the study's user attributes; the
ledger still knows the trials under the name they ran under). A study attribute is a storage
commit of its own (a disk sync on SQLite), so each :class:`MeteredObjective` checks them once
per study, at that study's first trial in this process, and writes them only when the study
does not already say so: one read per worker, two writes per study.
"""

from __future__ import annotations

import threading

import optuna

from hpsearch_budget.ledger._shareable import STUDY_ATTR, STUDY_NAME_ATTR, shareable_url

# Trials of one study start together with n_jobs > 1: one of them checks, the others skip.
_lock = threading.Lock()


def record_ledger_once(checked: set[str], study: optuna.Study, url: str) -> None:
    """Record ``url`` (no password, absolute SQLite path) as ``study``'s :data:`STUDY_ATTR`,
    and its name as :data:`STUDY_NAME_ATTR`, unless ``study`` is in ``checked`` (the caller's
    per-study memory, updated here)."""
    name = study.study_name
    if name in checked:  # the per-trial path: a set lookup, no lock
        return
    with _lock:
        if name in checked:
            return
        recorded = study.user_attrs
        for key, value in ((STUDY_ATTR, shareable_url(url)), (STUDY_NAME_ATTR, name)):
            if recorded.get(key) != value:
                study.set_user_attr(key, value)
        checked.add(name)

"""Record on the Optuna study which ledger its trials are metered into.

``hpaudit report sqlite:///study.db`` then finds the ledger without ``--ledger`` (see
:mod:`hpsearch_budget.report._recorded_ledger`). A study attribute is a storage commit of its
own (a disk sync on SQLite), so each :class:`MeteredObjective` checks it once per study, at that
study's first trial in this process, and writes it only when the study does not already say so:
one read per worker, one write per study.
"""

from __future__ import annotations

import threading

import optuna

from hpsearch_budget.ledger._shareable import STUDY_ATTR, shareable_url

# Trials of one study start together with n_jobs > 1: one of them checks, the others skip.
_lock = threading.Lock()


def record_ledger_once(checked: set[str], study: optuna.Study, url: str) -> None:
    """Record ``url`` (no password, absolute SQLite path) as ``study``'s :data:`STUDY_ATTR`
    unless ``study`` is in ``checked`` (the caller's per-study memory, updated here)."""
    name = study.study_name
    if name in checked:  # the per-trial path: a set lookup, no lock
        return
    with _lock:
        if name in checked:
            return
        shared = shareable_url(url)
        if study.user_attrs.get(STUDY_ATTR) != shared:
            study.set_user_attr(STUDY_ATTR, shared)
        checked.add(name)

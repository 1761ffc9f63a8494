"""Which ledger an Optuna study's or a Ray Tune folder's report joins when the user names none.

A sweep run through :func:`hpsearch_budget.optuna.optimize` or a ``metered`` objective records
its ledger's URL (no password, absolute SQLite path) as the study user attribute
``hpaudit_ledger``. Order: ``--ledger`` (always wins; an error if unusable), else that recorded
ledger when it opens read-only and holds rows of the study, else a ledger sharing the study's
own database, else the trials' energy user attributes. A recorded ledger that cannot be used
(moved file, another machine, a password needed, server down) is a note, never an error: the
report still comes out, from the attributes.

Whichever ledger is joined, the study is looked up there under the name recorded as
``hpaudit_ledger_study``: a study copied under a new name (``optuna.copy_study``) keeps the
name its trials were metered under. A study without it (metered before it was recorded) is
looked up under its own name.

A Ray Tune folder records the URL in the same way, as the key ``hpaudit_ledger`` of the first
result of each ledger window (``hpsearch_budget.ray.metered``); the same order applies (no
ledger shares a folder's database), and its trials are joined on their trial ids.
"""

from __future__ import annotations

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._shareable import STUDY_ATTR, STUDY_NAME_ATTR
from hpsearch_budget.report._source_common import (
    RECORDED_LEDGER_KEY,
    RECORDED_STUDY_KEY,
    Progress,
)
from hpsearch_budget.report._source_ledger import _join_entries, _ledger_entries, _with_ledger


def join_ledger(
    sweep: Sweep,
    ledger: str | None,
    progress: Progress,
    *,
    find: bool = True,
    colocated: str | None = None,
    ray: bool = False,
) -> Sweep:
    """Join ``ledger`` (``--ledger``), else the ledger the study records, else ``colocated``
    (a ledger in the study's database) onto ``sweep``. ``find=False`` (``--no-ledger``): none
    but ``ledger``: the report uses the trials' attributes. ``ray``: a Ray Tune folder's."""
    recorded = sweep.cache.pop(RECORDED_LEDGER_KEY, None)
    name = _ledger_study(sweep) if find or ledger is not None else sweep.study
    if ledger is not None:
        return _with_ledger(sweep, ledger, progress, named=True, study=name, ray=ray)
    if not find:
        return _with_ledger(sweep, None, progress, ray=ray)
    if isinstance(recorded, str) and _join_recorded(
        sweep, recorded, progress, colocated, name, ray
    ):
        return sweep
    return _with_ledger(sweep, colocated, progress, study=name, ray=ray)


def _ledger_study(sweep: Sweep) -> str:
    """The name the ledger knows ``sweep``'s trials under (a note when it is not the study's
    own: a copy under a new name)."""
    name = sweep.cache.pop(RECORDED_STUDY_KEY, None)
    if not isinstance(name, str) or name == sweep.study:
        return sweep.study
    sweep.notes.append(
        f"the ledger is read for study {name!r}, the name this study's trials were metered "
        f"under (its {STUDY_NAME_ATTR} attribute: a copy of that study under a new name)"
    )
    return name


def _join_recorded(
    sweep: Sweep, url: str, progress: Progress, colocated: str | None, name: str, ray: bool
) -> bool:
    """Join study ``name`` of the recorded ledger ``url``; False (and a note saying why) when
    it cannot be used."""
    progress("opening the recorded ledger")
    where = (
        f"the {STUDY_ATTR} key of the trials' results"
        if ray
        else f"the study's {STUDY_ATTR} attribute"
    )
    try:
        _, entries = _ledger_entries(url, name)
    except HpauditInputError as exc:
        why = str(exc).split("; ")[0]  # what went wrong, not the advice meant for --ledger
        sweep.notes.append(
            f"ledger not used: {where} names {url}, which cannot be used ({why}); "
            f"{_instead(colocated, ray)}; pass --ledger URL where that ledger is now"
        )
        return False
    _join_entries(sweep, entries, ray=ray)
    sweep.notes.append(f"ledger from {where}: {url}")
    return True


def _instead(colocated: str | None, ray: bool) -> str:
    """Where the figures come from when the recorded ledger cannot be used."""
    if colocated is not None:
        return "the ledger in the study's own database is tried instead"
    if ray:
        return "the figures come from the trials' results"
    return "the energy figures come from the trials' user attributes"

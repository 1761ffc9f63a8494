"""Which trial a trial retries: Optuna's ``RetryFailedTrialCallback`` link, for the ledger.

With heartbeats (``RDBStorage(heartbeat_interval=..., failed_trial_callback=
RetryFailedTrialCallback())``) Optuna fails the trial of a dead worker and enqueues a copy as a
new trial, linked to the first attempt only by the system attribute ``failed_trial``. The
retry's ledger window takes the first attempt's ``trial_key``, so the ledger and its report
hold one trial with a window per attempt (as a retried Ray trial), every attempt charged.

The dead attempt's own row is still ``running`` when its retry starts, holding its reservation
until ``Ledger.reap`` finds it silent (3 checkpoint intervals). Optuna's heartbeat has already
judged that worker dead, so the retry reaps that row at once (:func:`reap_dead_attempt`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from optuna.trial import Trial, TrialState

from hpsearch_budget.errors import LedgerError

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)

#: The system attribute ``RetryFailedTrialCallback`` sets on a retry: what its
#: ``retried_trial_number()`` returns. Read directly: that method is marked experimental and
#: would warn (ExperimentalWarning) in every sweep.
_FAILED_TRIAL = "failed_trial"
#: The numbers of every earlier attempt, first to last (``retry_history()``).
_HISTORY = "retry_history"


def first_attempt(trial: Trial) -> int:
    """The number of the trial that ``trial`` retries (its own number when not a retry)."""
    # The frozen trial Optuna itself reads fixed_params from: no extra storage read per trial.
    frozen = getattr(trial, "_cached_frozen_trial", None)
    retried = frozen.system_attrs.get(_FAILED_TRIAL) if frozen is not None else None
    return trial.number if retried is None else int(retried)


def reap_dead_attempt(ledger: Ledger, trial: Trial, trial_key: str) -> None:
    """If ``trial`` is a heartbeat retry (its window's ``trial_key`` is its first attempt's,
    :func:`first_attempt`), finalise the attempt it replaces as ``killed`` (the
    energy of its last checkpoint, its reservation released), but only once Optuna's storage
    holds that attempt as FAIL: the heartbeat's verdict that its worker is dead. A ledger that
    cannot do it now leaves the row to :meth:`Ledger.reap`; the retry runs on."""
    dead = _previous_attempt(trial)
    if dead is None or not _failed(trial, dead):
        return
    name = trial.study.study_name
    try:
        rows = ledger.entries(name, open_only=True)
        if rows.empty:
            return
        mine = rows[(rows["trial_key"] == trial_key) & (rows["trial_number"] == dead)]
        if not mine.empty:
            ledger.reap(windows=[int(w) for w in mine["id"]])
    except LedgerError as exc:
        _log.warning(
            "trial %d: could not close the ledger row of trial %d, the dead attempt it retries "
            "(%s); Ledger.reap closes it once it has been silent for 3 checkpoint intervals",
            trial.number,
            dead,
            exc,
        )


def _previous_attempt(trial: Trial) -> int | None:
    """The number of the attempt ``trial`` directly retries (None when not a retry)."""
    frozen = getattr(trial, "_cached_frozen_trial", None)
    if frozen is None or _FAILED_TRIAL not in frozen.system_attrs:
        return None
    history = frozen.system_attrs.get(_HISTORY) or [frozen.system_attrs[_FAILED_TRIAL]]
    return int(history[-1])


def _failed(trial: Trial, number: int) -> bool:
    """Whether Optuna's storage holds trial ``number`` of ``trial``'s study as FAIL (one read
    of that trial, on retries only)."""
    storage = trial.study._storage
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return storage.get_trial(trial_id).state == TrialState.FAIL

"""Which trial a trial retries: Optuna's ``RetryFailedTrialCallback`` link, for the ledger.

With heartbeats (``RDBStorage(heartbeat_interval=..., failed_trial_callback=
RetryFailedTrialCallback())``) Optuna fails the trial of a dead worker and enqueues a copy as a
new trial, linked to the first attempt only by the system attribute ``failed_trial``. The
retry's ledger window takes the first attempt's ``trial_key``, so the ledger and its report
hold one trial with a window per attempt (as a retried Ray trial), every attempt charged.
"""

from __future__ import annotations

from optuna.storages import RetryFailedTrialCallback
from optuna.trial import Trial


def first_attempt(trial: Trial) -> int:
    """The number of the trial that ``trial`` retries (its own number when not a retry)."""
    # The frozen trial Optuna itself reads fixed_params from: no extra storage read per trial.
    frozen = getattr(trial, "_cached_frozen_trial", None)
    retried = RetryFailedTrialCallback.retried_trial_number(frozen) if frozen else None
    return trial.number if retried is None else int(retried)

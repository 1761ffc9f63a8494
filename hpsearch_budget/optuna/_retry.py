"""Which trial a trial retries: Optuna's ``RetryFailedTrialCallback`` link, for the ledger.

With heartbeats (``RDBStorage(heartbeat_interval=..., failed_trial_callback=
RetryFailedTrialCallback())``) Optuna fails the trial of a dead worker and enqueues a copy as a
new trial, linked to the first attempt only by the system attribute ``failed_trial``. The
retry's ledger window takes the first attempt's ``trial_key``, so the ledger and its report
hold one trial with a window per attempt (as a retried Ray trial), every attempt charged.
"""

from __future__ import annotations

from optuna.trial import Trial

#: The system attribute ``RetryFailedTrialCallback`` sets on a retry: what its
#: ``retried_trial_number()`` returns. Read directly: that method is marked experimental and
#: would warn (ExperimentalWarning) in every sweep.
_FAILED_TRIAL = "failed_trial"


def first_attempt(trial: Trial) -> int:
    """The number of the trial that ``trial`` retries (its own number when not a retry)."""
    # The frozen trial Optuna itself reads fixed_params from: no extra storage read per trial.
    frozen = getattr(trial, "_cached_frozen_trial", None)
    retried = frozen.system_attrs.get(_FAILED_TRIAL) if frozen is not None else None
    return trial.number if retried is None else int(retried)

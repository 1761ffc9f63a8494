"""``BudgetCallback``: stop the study in every worker once the budget cannot pay for a trial.

Every worker runs its own callback against the same ledger, so they all stop on their own,
without talking to each other. "What is left" is the limit minus what is spent; reservations
of running trials are not subtracted, since they are given back (in part) when those trials
end, and a new trial waits for that room at its reservation (see
:func:`~hpsearch_budget.optuna.metered`).

Example:

    >>> import optuna
    >>> from hpsearch_budget import Budget
    >>> from hpsearch_budget.ledger import Ledger
    >>> from hpsearch_budget.optuna import BudgetCallback, metered
    >>> import tempfile
    >>> ledger = Ledger(f"sqlite:///{tempfile.mkdtemp()}/ledger.db")
    >>> from hpsearch_budget.meters import ReplayMeter
    >>> meter = ReplayMeter(power_w=100.0)  # a simulated 100 W machine
    >>> def objective(trial):
    ...     meter.advance(1.0)  # one second of work: 100 J
    ...     return trial.suggest_float("x", 0, 1)
    >>> stop = BudgetCallback(Budget(energy_kwh=250 / 3.6e6), ledger)  # 250 J
    >>> study = optuna.create_study()
    >>> study.optimize(metered(objective, ledger, meter), n_trials=5, callbacks=[stop])
    >>> len(study.trials), stop.stopped is not None  # 50 J left cannot pay for 100 J
    (2, True)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.budget._accounting import fits, used_fraction
from hpsearch_budget.optuna import _state
from hpsearch_budget.optuna._limits import StudyLimits, spent_label
from hpsearch_budget.policy._sweep import CapWarner, is_policy_cap, request_stop, stop_reason
from hpsearch_budget.units import kg_to_g, kwh_to_j

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)


class BudgetCallback(StudyLimits):
    """An Optuna callback (``study.optimize(..., callbacks=[...])``) that stops the study.

    Args:
        budget: the study's limit.
        ledger: the ledger the metered objective writes to (a :class:`Ledger` or a URL).
        policy: the lab policy; None finds the lab's file, here (an edit of it applies within
            a second); False opts out. Under ``on_exceed = "warn"`` a passed cap is logged
            once; under "stop" the callback stops the study once a cap has stopped it.
        project, user: who the sweep belongs to, for the policy's caps.
        ttl_s, near_fraction: while spent + a typical trial stay below ``near_fraction`` of the
            limit, the spent figure may be up to ``ttl_s`` old (no ledger read per trial);
            nearer, it is read fresh after every trial.

    After a stop, :attr:`stopped` says why (None while the study runs on).
    """

    def __init__(
        self,
        budget: Budget,
        ledger: Ledger | str,
        *,
        policy: Any = None,
        project: str | None = None,
        user: str | None = None,
        ttl_s: float = 1.0,
        near_fraction: float = 0.8,
    ) -> None:
        super().__init__(budget, ledger, policy=policy, project=project, user=user, ttl_s=ttl_s)
        self.near_fraction = near_fraction
        self.stopped: str | None = None
        self._since: dict[str, tuple[float, Cost]] = {}
        self._warners: dict[str, CapWarner] = {}

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.after_trial(study, _trial_cost(trial))

    def after_trial(self, study: optuna.Study, cost: Cost) -> None:
        """The check after a trial that cost ``cost`` ended: stop ``study`` if the budget
        cannot pay for a typical trial. :func:`metered` calls this itself when given the
        callback (``metered(..., budget_callback=...)``), which spares Optuna's re-read of
        every finished trial that a ``study.optimize(callbacks=...)`` callback costs."""
        stopped = stop_reason(self.ledger.url, study.study_name)
        if stopped is not None:  # on_exceed = "stop" (a trial or the pruner asked for it)
            self.stopped = self.stopped or stopped
            study.stop()
            return
        self._warner(study.study_name).check()
        state = _state.study_state(self.ledger, study.study_name)
        state.sync()
        acc = self._accounting_for(study.study_name)
        typical = state.forecaster.new_trial()
        limit = self.budget.as_cost()
        # Far from the limit a cached figure decides nothing: skip the ledger read. The
        # cached spent is topped up with the trials this callback saw finish since the read.
        cached = acc.spent()
        read_at, since = self._since.get(study.study_name, (acc.read_at, Cost()))
        since = (since if read_at == acc.read_at else Cost()) + cost
        self._since[study.study_name] = (acc.read_at, since)
        if used_fraction(cached + since + typical, limit) < self.near_fraction:
            return
        left = acc.left_after_release(fresh=True)
        spent = acc.spent()
        exhausted = used_fraction(spent, limit) >= 1.0
        if exhausted or not fits(typical, left):
            index, name = self._binding(study.study_name, acc, typical)
            of = f"of {self.budget.describe()}" if index == 0 else "in the study"
            unit = acc.limits[index][1]  # figures in the binding limit's units (USD, GPU-h...)
            self.stopped = (
                f"budget: {spent.describe_in(unit)} spent{spent_label(study)} {of}; what is left "
                f"of the {name} cannot pay for a typical trial (forecast "
                f"{typical.describe_in(unit)}, estimate)"
            )
            if is_policy_cap(index) and self.policy is not None and self.policy.on_exceed == "stop":
                request_stop(self.ledger.url, study.study_name, self.stopped)
            _log.info("stopping study %r: %s", study.study_name, self.stopped)
            study.stop()

    def typical_trial(self, study: str) -> Cost:
        """The forecast cost of the next trial of ``study``."""
        return _state.study_state(self.ledger, study).forecaster.new_trial()

    def _warner(self, study: str) -> CapWarner:
        warner = self._warners.get(study)
        if warner is None:
            warner = self._warners[study] = CapWarner(
                self.ledger, self._live_policy, study, self.project, self.user, ttl_s=0.0
            )
        return warner


def _trial_cost(trial: FrozenTrial) -> Cost:
    """A finished trial's energy and carbon, from the user attributes ``metered`` sets."""
    kwh, kg = trial.user_attrs.get("energy_kwh"), trial.user_attrs.get("co2e_kg")
    if not isinstance(kwh, int | float) or not isinstance(kg, int | float):
        return Cost()
    return Cost(energy_j=kwh_to_j(kwh), co2e_g=kg_to_g(kg))

"""``BudgetStopper``: a ``ray.tune.Stopper`` that keeps a sweep inside its budget.

At every result of a metered trial it reserves, in the shared ledger, what the trial is
forecast to still spend; a trial whose forecast no longer fits is stopped. ``stop_all()`` ends
the experiment once the budget is exhausted: spent has reached a limit, or a trial was refused
and nothing still running holds a reservation that could make room for another.

A stopper cannot keep a trial from starting: a trial that does not fit is stopped at its first
report (cost: one report interval). :class:`~hpsearch_budget.ray.BudgetScheduler` holds such a
trial back instead, and stops the least promising trials first.

Example::

    from ray import tune
    from hpsearch_budget import Budget, Ledger
    from hpsearch_budget.ray import BudgetStopper, metered

    ledger = Ledger("sqlite:////shared/hpaudit.db")
    tuner = tune.Tuner(
        metered(train, ledger),
        run_config=tune.RunConfig(stop=BudgetStopper(Budget(energy_kwh=2.0), ledger)),
    )
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ray.tune import Stopper

from hpsearch_budget.errors import BudgetExceededError
from hpsearch_budget.ray._guard import BudgetGuard

if TYPE_CHECKING:
    from hpsearch_budget.budget import Budget, TrialForecaster
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)


class BudgetStopper(Stopper):
    """Stops trials whose forecast no longer fits the budget; all of them once it is spent.

    Args:
        budget: the study's :class:`~hpsearch_budget.Budget`.
        ledger: the ledger the metered trainables write to.
        study: the ledger study; default the Tune experiment name (from the first result).
            Given, an already spent budget raises ``BudgetExceededError`` right here; not
            given, it stops every trial at its first report and ends the sweep
            (:attr:`reasons` says why).
        policy: a lab policy whose caps (per project / user per month) apply on top; None
            finds the lab's file, here, and follows it (an edit applies within a second at the
            next result); False opts out. ``on_exceed = "stop"``: once a
            cap refuses a trial, every trial stops and the sweep ends; "warn": logged once.
        project, user: the sweep's owner, for the policy's caps.
        forecaster, max_steps: the per-trial cost model (default: learnt from this sweep).
    """

    def __init__(
        self,
        budget: Budget,
        ledger: Ledger,
        *,
        study: str | None = None,
        policy: Any = None,
        project: str | None = None,
        user: str | None = None,
        forecaster: TrialForecaster | None = None,
        max_steps: int | None = None,
    ) -> None:
        self.guard = BudgetGuard(
            budget,
            ledger,
            study=study,
            policy=policy,
            project=project,
            user=user,
            forecaster=forecaster,
            max_steps=max_steps,
        )
        self.stopped: list[str] = []  # trials this stopper ended, in order
        self.reasons: dict[str, str] = {}  # trial id -> why (names the binding budget or cap)

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        try:
            fits = self.guard.on_result(trial_id, result, "BudgetStopper")
        except BudgetExceededError as exc:
            # Without study= the study is learnt from this first result, so an already spent
            # budget shows only now: every trial stops at its first report and the sweep ends
            # (raised here, Tune would bury the reason in a traceback and run on).
            self.guard.stop_reason = self.guard.last_refusal = str(exc)
            _log.warning("hpaudit: %s", exc)
            fits = False
        if not fits:
            self.guard.refused += 1
            self.stopped.append(trial_id)
            self.guard.finished(trial_id, complete=False)
            why = self.guard.refusal()
            self.reasons[trial_id] = why
            _log.info("hpaudit: stopping trial %s: %s", trial_id, why)
            return True
        if result.get("done"):
            self.guard.finished(trial_id, complete=True)
        return False

    def stop_all(self) -> bool:
        if self.guard.exhausted():
            why = self.guard.stop_reason or self.guard.exhausted_reason()
            _log.info("hpaudit: study %r: %s: stopping the sweep", self.guard.study, why)
            return True
        return False

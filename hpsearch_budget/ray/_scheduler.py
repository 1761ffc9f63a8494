"""``BudgetScheduler``: ASHA or FIFO (or any scheduler that never pauses), kept inside a budget.

It wraps a Tune scheduler and adds three rules:

* **admission**: a pending trial starts only if its forecast cost (learnt from this sweep's
  finished trials) fits what is left after running trials' reservations; otherwise it waits,
  and once nothing runs and it still does not fit, the sweep ends (remaining trials are
  stopped, the search algorithm is told it is finished);
* **reservation**: at every result a running trial reserves, atomically in the shared ledger,
  what it is forecast to still spend;
* **least promising first**: when a reservation fails, the committed cost would pass the
  budget; the running trial with the worst last value of the metric is stopped (at its next
  report, if it is not the one reporting), so the promising ones finish.

Everything else (early stopping by rungs, brackets) is the wrapped scheduler's. Overshoot is at
most one report interval of each running trial.

Example::

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from hpsearch_budget import Budget, Ledger
    from hpsearch_budget.ray import BudgetScheduler, metered

    ledger = Ledger("sqlite:////shared/hpaudit.db")
    scheduler = BudgetScheduler(Budget(co2e_kg=0.5), ledger, base=ASHAScheduler(max_t=20))
    tuner = tune.Tuner(metered(train, ledger),
                       tune_config=tune.TuneConfig(metric="loss", mode="min",
                                                   scheduler=scheduler, num_samples=50))
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.ray._compat import ensure_trial_dir
from hpsearch_budget.ray._guard import BudgetGuard

if TYPE_CHECKING:
    from hpsearch_budget.budget import Budget, TrialForecaster
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)

#: How long a stopped trial may still hold its reservation (its worker finalises its window).
RELEASE_WAIT_S = 10.0


class BudgetScheduler(TrialScheduler):
    """A Tune scheduler that keeps the sweep inside ``budget``, around a ``base`` scheduler.

    Args:
        budget: the study's :class:`~hpsearch_budget.Budget`.
        ledger: the ledger the metered trainables write to.
        base: the scheduler to wrap (``ASHAScheduler``, ``FIFOScheduler``, the cost-aware
            ASHA...); default FIFO. Schedulers that pause trials (``HyperBandScheduler``,
            ``PopulationBasedTraining``) are refused: a paused trial waits for a bracket the
            budget may never let fill, and the sweep would hang. ASHA is HyperBand without
            pauses.
        study: the ledger study; default the Tune experiment name (from the first trial).
            Given, an already spent budget raises ``BudgetExceededError`` right here.
        metric, mode: what "promising" means; default the base scheduler's / TuneConfig's.
            Given here, they are also the base scheduler's when it has none of its own.
        policy: a lab policy whose caps apply on top (None finds the lab's file, here, and
            follows it: an edit applies within a second; False opts out);
            ``on_exceed = "stop"`` ends the sweep when a cap refuses a trial, "warn" logs it
            once; project, user: for its caps.
        forecaster, max_steps: the per-trial cost model; ``max_steps`` defaults to ASHA's /
            its ``max_t`` when it counts ``training_iteration``.
    """

    def __init__(
        self,
        budget: Budget,
        ledger: Ledger,
        base: TrialScheduler | None = None,
        *,
        study: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        policy: Any = None,
        project: str | None = None,
        user: str | None = None,
        forecaster: TrialForecaster | None = None,
        max_steps: int | None = None,
    ) -> None:
        super().__init__()
        if base is not None and not isinstance(base, TrialScheduler):
            raise HpauditInputError(
                f"base must be a Ray Tune TrialScheduler (ASHAScheduler, FIFOScheduler), got "
                f"{type(base).__name__}"
            )
        if isinstance(base, BudgetScheduler):
            raise HpauditInputError("base is already a BudgetScheduler; wrap the inner one once")
        _refuse_pausing(base)
        if mode not in (None, "min", "max"):
            raise HpauditInputError(f"mode must be 'min' or 'max', got {mode!r}")
        self.base = base if base is not None else FIFOScheduler()
        self.guard = BudgetGuard(
            budget,
            ledger,
            study=study,
            policy=policy,
            project=project,
            user=user,
            forecaster=forecaster,
            max_steps=max_steps if max_steps is not None else _base_max_steps(self.base),
        )
        self._metric = metric
        self._mode = mode
        self.promised: dict[str, Cost] = {}  # admitted, no reservation of its own yet
        self.doomed: set[str] = set()  # to stop at their next result
        self._short_of: dict[str, str] = {}  # doomed trial -> the limit that ran short
        self.stopped_by_budget: list[str] = []
        self.reasons: dict[str, str] = {}  # trial id -> why the budget or a cap stopped it
        self._early: set[str] = set()  # stopped before finishing (by us or by the base)
        self._leaving: dict[str, float] = {}  # told to stop -> until when it may hold room
        self._finished = False

    # -- delegation -----------------------------------------------------------------------------

    @property
    def metric(self) -> str | None:
        return self._metric or self.base.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.base.supports_buffered_results

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        # A base without its own (ASHA ranks by them) gets the ones given here, not only
        # TuneConfig's: else it fails the run at the first result.
        if self.base.metric is None:
            metric = metric or self._metric
        if getattr(self.base, "_mode", None) is None:
            mode = mode or self._mode
        return self.base.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._bind(trial)
        self.base.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._forget(trial, complete=False)
        self.base.on_trial_error(tune_controller, trial)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._forget(trial, complete=trial.trial_id not in self._early)
        self.base.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._forget(trial, complete=False)
        self.base.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        state = "exhausted" if self._finished else f"{len(self.stopped_by_budget)} stopped"
        return f"{self.base.debug_string()} Budget {self.guard.budget.describe()}: {state}."

    def save(self, checkpoint_path: str) -> None:
        self.base.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.base.restore(checkpoint_path)

    # -- budget ---------------------------------------------------------------------------------

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trial = self.base.choose_trial_to_run(tune_controller)
        if trial is None or trial.status != Trial.PENDING:
            return trial  # a paused trial resumes: it was admitted before
        self._bind(trial)
        if self.guard.stop_reason is not None:  # on_exceed = "stop": no new trial starts,
            self._finish(tune_controller)  # not even one admitted before the stop
            ensure_trial_dir(trial)
            return None
        if trial.trial_id in self.promised:
            return trial  # admitted earlier; Tune asks again until it starts
        try:
            fits = self._admits()
        except LedgerError as error:
            # Not known: wait while trials run (their results read it again); with nothing
            # running the sweep would wait for ever, so it ends, saying why.
            self.guard.ledger_failed(error)
            if not self.promised and not self._running(tune_controller):
                self.guard.stop_for_ledger(f"the ledger cannot be read to admit a trial ({error})")
                self._finish(tune_controller)
            ensure_trial_dir(trial)
            return None
        if fits:
            self.promised[trial.trial_id] = self.guard.forecaster.new_trial()
            return trial
        if not self.promised and not self._running(tune_controller):
            self._finish(tune_controller)
        ensure_trial_dir(trial)  # if the sweep ends while it waits, Tune needs its folder
        return None  # wait: a running trial may finish under its forecast and make room

    def _admits(self) -> bool:
        """Whether one more trial's forecast fits after the promises made."""
        promised = sum(self.promised.values(), Cost())
        # Room that trials Tune already ended still hold: their workers release it as they
        # finalise their windows, a moment after Tune stops them. Counting it keeps the sweep
        # from ending in that moment while another trial would fit.
        return self.guard.new_trial_fits(promised) or self.guard.new_trial_fits(
            promised, room=self.guard.releasing()
        )

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        tid = trial.trial_id
        self.promised.pop(tid, None)  # its own reservation replaces the promise
        if tid in self.doomed:
            short = self._short_of.pop(tid, "budget")
            return self._stop(tid, f"chosen as the least promising when the {short} ran short")
        if not self.guard.on_result(tid, result, "BudgetScheduler"):
            why = self.guard.refusal()
            if self.guard.stop_reason is not None:  # on_exceed = "stop": every trial stops
                return self._stop(tid, self.guard.stop_reason)
            if not self.guard.fits_alone(tid):
                # Even if every other trial left now, what is spent plus this trial's forecast
                # passes the budget: stopping another one would not save it.
                return self._stop(tid, why)
            if not self._others_leaving(tid):  # else: wait for their reservations to go
                victim = self._least_promising(tune_controller, trial, result)
                if victim is trial:
                    return self._stop(tid, why)
                self.doomed.add(victim.trial_id)
                self._short_of[victim.trial_id] = self.guard.binding()[1]
        decision = self.base.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self._early.add(tid)
            self._leaving[tid] = time.monotonic() + RELEASE_WAIT_S
        return decision

    def _others_leaving(self, trial_id: str) -> bool:
        """Whether other trials were told to stop and may still hold reservations (a worker
        finalises its window, releasing the reservation, a moment after Tune stops it)."""
        now = time.monotonic()
        self._leaving = {t: d for t, d in self._leaving.items() if d > now}
        return bool((self.doomed | set(self._leaving)) - {trial_id})

    def _stop(self, trial_id: str, why: str) -> str:
        self.doomed.discard(trial_id)
        self._early.add(trial_id)
        self._leaving[trial_id] = time.monotonic() + RELEASE_WAIT_S
        self.stopped_by_budget.append(trial_id)
        self.reasons[trial_id] = why
        _log.info("hpaudit: stopping trial %s: %s", trial_id, why)
        return TrialScheduler.STOP

    def _least_promising(self, tune_controller: Any, trial: Trial, result: dict) -> Trial:
        """The running trial with the worst last metric value (the reporting one on ties)."""
        metric, mode = self.metric, self._mode or getattr(self.base, "_mode", None)
        if not metric or mode not in ("min", "max"):
            return trial

        def badness(t: Trial) -> float:
            last = result if t is trial else (t.last_result or {})
            value = last.get(metric)
            if not isinstance(value, int | float) or math.isnan(value):
                return -math.inf  # no value yet: nothing says it is bad
            return float(value) if mode == "min" else -float(value)

        candidates = [
            t
            for t in self._running(tune_controller)
            if t.trial_id not in self.doomed and t is not trial
        ]
        worst = max(candidates, key=badness, default=None)
        _log.debug(
            "hpaudit: least promising of %s: %s",
            [(t.trial_id, badness(t)) for t in [trial, *candidates]],
            worst.trial_id if worst is not None else None,
        )
        if worst is None or badness(worst) <= badness(trial):
            return trial
        return worst

    def _running(self, tune_controller: Any) -> list[Trial]:
        return [t for t in tune_controller.get_live_trials() if t.status == Trial.RUNNING]

    def _finish(self, tune_controller: Any) -> None:
        """Nothing runs and no new trial fits: end the sweep."""
        if not self._finished:
            _log.info(
                "hpaudit: budget of study %r cannot admit another trial: ending the sweep",
                self.guard.study,
            )
        self._finished = True
        tune_controller.search_alg.set_finished()
        for t in list(tune_controller.get_trials()):
            if t.status == Trial.PENDING:
                ensure_trial_dir(t)
                tune_controller.stop_trial(t)

    def _bind(self, trial: Trial) -> None:
        if self.guard.study is None:
            self.guard.bind(trial.experiment_dir_name)

    def _forget(self, trial: Trial, *, complete: bool) -> None:
        self.promised.pop(trial.trial_id, None)
        self.doomed.discard(trial.trial_id)
        self.guard.finished(trial.trial_id, complete=complete)


def _refuse_pausing(base: TrialScheduler | None) -> None:
    """Schedulers that pause trials deadlock under a binding budget (a paused trial waits for
    its bracket, whose pending trials the budget does not admit): refuse them up front."""
    from ray.tune.schedulers import HyperBandScheduler, PopulationBasedTraining

    if isinstance(base, HyperBandScheduler | PopulationBasedTraining):
        raise HpauditInputError(
            f"BudgetScheduler cannot wrap {type(base).__name__}: it pauses trials, and under a "
            "binding budget a paused trial can wait for ever; use ASHAScheduler (HyperBand "
            "without pauses) or BudgetStopper"
        )


def _base_max_steps(base: TrialScheduler) -> int | None:
    if getattr(base, "_time_attr", "training_iteration") != "training_iteration":
        return None
    for name in ("_max_t", "_max_t_attr"):
        value = getattr(base, name, None)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return int(value)
    return None

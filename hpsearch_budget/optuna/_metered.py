"""``metered``: an Optuna objective whose every trial is a window in the energy ledger.

Each trial opens a ledger row (``study = study.study_name``, ``trial_key =
"<study_name>:<trial.number>"``, ``trial_number = trial.number``), checkpoints its energy at every
``trial.report(value, step)`` -- the objective gets a :class:`MeteredTrial`, a real
:class:`optuna.trial.Trial`, so user code does not change -- and finalises the row with the
trial's fate: ``complete``, ``pruned``, ``failed`` (a failing objective is still charged) or
``killed`` (KeyboardInterrupt). When the trial ends it gets the user attributes
``energy_kwh``, ``co2e_kg`` and ``energy_source``, and ``hpaudit_prune_reason`` when pruned:
they show in optuna-dashboard and ``trials_dataframe()``. (Its ledger row is the one with
``trial_key`` ``"<study_name>:<number>"``.) The study gets the user attribute
``hpaudit_ledger``, the ledger's URL without its password (an SQLite path made absolute), so
that ``hpaudit report`` finds the ledger without ``--ledger``: checked at the study's first trial
in this process and written only if the study does not already say so. A retry that Optuna's
``RetryFailedTrialCallback`` enqueued for a dead worker's trial writes its window under the
first attempt's ``trial_key`` (``trial_number`` stays its own): one trial, a window per attempt;
the dead attempt's row, still running, is then closed as ``killed`` at its last checkpoint
(its reservation released) once Optuna's storage holds that attempt as failed.

With a ``budget`` the trial first reserves its forecast cost atomically in the ledger
(in the transaction that opens its row, :meth:`Ledger.open_window` with ``reserve=``; later
attempts through :meth:`Ledger.try_reserve`), so workers on many machines cannot jointly
overshoot; the reservation is released when the row is finalised. A trial that can never fit
stops the study.

What a checkpoint is: every report measures the trial and updates its live state in this
process (``MeteredTrial.cost``, what this process's :class:`BudgetPruner` reads). The ledger
row is written at a report unless all of these hold, in which case the report waits for the
next write (which carries its step, value and energy): the trial holds a reservation that
covers everything it has spent (the ledger counts the unwritten part as committed, so every
worker's spent + committed stays exact), the study is not near its limit (the pruner says so
per study, and writes the pending report itself when it first finds the study near), and the
row was written less than ``min_checkpoint_interval_s`` (default 1 s, at most
``checkpoint_interval_s``) ago. Such a report may reuse a meter read up to 10 ms old (meters
that follow the wall clock, :attr:`~hpsearch_budget.meters.Meter.wall_clock`); a write reads
afresh. ``min_checkpoint_interval_s=0``, trials without a reservation
and explicit :meth:`MeteredTrial.checkpoint` calls write every time. The heartbeat still writes
a row silent for ``checkpoint_interval_s``, and the pending step and value are written with the
final row (:meth:`Ledger.finalize` with ``step=``). A killed worker's row keeps the energy of
its last write: at most ``max(min_checkpoint_interval_s, one report interval)`` is lost, within
one checkpoint interval.

Idle: what the meter measures while none of this process's trials runs (the sampler, Optuna's
storage, devices idling) is kept by the shared meter and written as one finished ledger row of
``phase="idle"`` (``trial_key`` ``"idle:<host>:<pid>:<n>"``, no trial number) once such gaps add
up to ``checkpoint_interval_s``, checked as a trial starts; :meth:`MeteredObjective.record_idle`
writes the rest (``optimize()`` calls it at the sweep's end). A gap longer than
``checkpoint_interval_s`` (a notebook idle between two sweeps) is not the sweep's: not kept.

Example:

    >>> import optuna
    >>> from hpsearch_budget.ledger import Ledger
    >>> from hpsearch_budget.optuna import metered
    >>> def objective(trial):
    ...     x = trial.suggest_float("x", -10, 10)
    ...     for step in range(3):
    ...         trial.report((x - 2) ** 2 + 1.0 / (step + 1), step)
    ...     return (x - 2) ** 2
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study()
    >>> import tempfile
    >>> ledger = Ledger(f"sqlite:///{tempfile.mkdtemp()}/ledger.db")
    >>> study.optimize(metered(objective, ledger), n_trials=3)
    >>> sorted(k for k in study.trials[0].user_attrs)
    ['co2e_kg', 'energy_kwh', 'energy_source']
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import Trial

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.budget._accounting import Accounting, fits, used_fraction
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._idle import write_idle
from hpsearch_budget.optuna import _state
from hpsearch_budget.optuna._ledger_attr import record_ledger_once
from hpsearch_budget.optuna._limits import require_budget, spent_label
from hpsearch_budget.optuna._metering import SharedMeter, shared_meter
from hpsearch_budget.optuna._name_reuse import warn_if_name_reused
from hpsearch_budget.optuna._objective_checks import (
    ObjectiveValueError,
    check_directions,
    check_result,
)
from hpsearch_budget.optuna._retry import first_attempt, reap_dead_attempt
from hpsearch_budget.optuna._trial_run import _NOTHING, MeteredTrial, _TrialRun, heartbeat
from hpsearch_budget.optuna._user_attrs import set_user_attrs
from hpsearch_budget.policy._reload import current
from hpsearch_budget.policy._sweep import binding_limit, enforces_caps, is_policy_cap

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Meter
    from hpsearch_budget.optuna._callback import BudgetCallback
    from hpsearch_budget.policy import Policy

__all__ = ["MeteredObjective", "MeteredTrial", "ObjectiveValueError", "metered"]

_log = logging.getLogger(__name__)

#: How long a trial waits between reservation attempts while other trials hold the room.
_RETRY_S = (0.2, 2.0)


class MeteredObjective:
    """The callable :func:`metered` returns. Picklable settings, lazily opened resources."""

    def __init__(
        self,
        objective: Callable[[Trial], Any],
        ledger: Ledger | str | None = None,
        meter: Meter | None = None,
        energy_objective: bool = False,
        *,
        budget: Budget | None = None,
        policy: Any = None,
        max_steps: int | None = None,
        project: str | None = None,
        user: str | None = None,
        checkpoint_interval_s: float = 30.0,
        min_checkpoint_interval_s: float = 1.0,
        budget_callback: BudgetCallback | None = None,
    ) -> None:
        if not callable(objective):
            raise HpauditInputError(
                f"metered() needs the objective function, got {type(objective).__name__}"
            )
        if budget is not None:
            require_budget(budget)
        if not (
            isinstance(min_checkpoint_interval_s, int | float)
            and not isinstance(min_checkpoint_interval_s, bool)
            and 0.0 <= min_checkpoint_interval_s < math.inf
        ):
            raise HpauditInputError(
                f"min_checkpoint_interval_s must be a number of seconds >= 0 (0 writes every "
                f"report), got {min_checkpoint_interval_s!r}"
            )
        from hpsearch_budget.policy._reload import follow_policy
        from hpsearch_budget.policy._sweep import open_ledger

        self.objective = objective
        # The lab's policy file is read here, so a malformed one fails before any trial; then
        # followed: an edit applies within a second (the last good version while it is broken).
        self._live_policy = follow_policy(policy)
        self.ledger = open_ledger(ledger, self.policy)
        self.meter = meter
        self.energy_objective = energy_objective
        self.budget = budget
        self.max_steps = max_steps
        self.project = project
        self.user = user
        self.checkpoint_interval_s = checkpoint_interval_s
        self.min_checkpoint_interval_s = float(min_checkpoint_interval_s)
        self.budget_callback = budget_callback
        #: What ``budget_callback`` raised, if it did: the study was stopped there (an error
        #: raised inside the objective would turn the finished trial into a failed one).
        self.callback_error: Exception | None = None
        #: The first error the ledger raised finalising a trial, if any: the study was stopped
        #: there and the trial kept its result (see :meth:`_finalize`).
        self.ledger_error: Exception | None = None
        self._who: dict[str, tuple[str, str]] = {}
        #: Studies whose ``hpaudit_ledger`` attribute this objective has checked (or written).
        self._ledger_recorded: set[str] = set()
        #: Why a trial found no room in the budget and stopped the study (None: it did not).
        self.stopped: str | None = None

    @property
    def policy(self) -> Policy | None:
        """The lab policy in force now (None: opted out)."""
        return current(self._live_policy)

    # -- the trial ------------------------------------------------------------------------
    def __call__(self, trial: Trial) -> Any:
        study = trial.study
        check_directions(study, self.energy_objective)
        name = study.study_name
        # hpaudit report finds the ledger from the study: its first trial here records it.
        record_ledger_once(self._ledger_recorded, study, self.ledger.url)
        warn_if_name_reused(self.ledger, trial)
        state = _state.study_state(self.ledger, name, self.max_steps)
        meter = shared_meter(self.meter)
        project, user = self._identity(name)
        if meter.idle_wall_s >= self.checkpoint_interval_s:  # at most once per interval
            self._record_idle(name, meter)
        budgeted = self.budget is not None or enforces_caps(self.policy)
        key = f"{name}:{first_attempt(trial)}"  # a heartbeat retry joins its first attempt
        if key != f"{name}:{trial.number}":  # before reserving: it frees the dead one's
            reap_dead_attempt(self.ledger, trial, key)
        first = self._first_reservation(state, name, project, user) if budgeted else None
        opened = self.ledger.open_window(
            name,
            key,
            trial_number=trial.number,
            params=dict(trial.params),
            project=project,
            user=user,
            checkpoint_interval_s=self.checkpoint_interval_s,
            reserve=first,
        )
        window_id, reserved = opened if isinstance(opened, tuple) else (opened, False)
        # The meter window opens once the trial may run (after the row exists: a failed open
        # leaves no window behind). A trial waiting for room in the budget takes no share of
        # what the running trials spend (n_jobs > 1): _reserve, then run.start().
        token = meter.open(self.checkpoint_interval_s) if reserved or not budgeted else None
        live = _state.LiveTrial(name, trial.number, window_id, wall_clock=meter.meter.wall_clock)
        if reserved and first is not None:
            live.reserved = first[0]
        run = _TrialRun(self.ledger, meter, live, token, self.checkpoint_interval_s, state)
        live.flush = run.flush
        _state.register(live)
        heartbeat.add(run)
        status, values = "failed", None
        try:
            if budgeted:
                if not reserved:  # stopped, or no room now: wait for it, or stop the study
                    self._reserve(trial, state, live, project, user)
                    run.start()
                # Reports may now skip the ledger while the reservation covers the spend; at
                # most one checkpoint interval apart (the heartbeat writes silent rows anyway).
                run.throttle_s = min(self.min_checkpoint_interval_s, self.checkpoint_interval_s)
            elif self.policy is not None and self.policy.on_exceed == "warn":
                self._warner(name, project, user).check()
            result = self.objective(MeteredTrial(trial, run))
            values = check_result(result, study, trial.number, self.energy_objective)
            status = "complete"
        except optuna.TrialPruned:
            status = "pruned"
            raise
        except Exception:
            status = "failed"
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: the worker was stopped
            status = "killed"
            raise
        finally:
            cost, recorded = self._finalize(trial, run, state, status, values)
            if not recorded:  # the ledger failed: keep the result, stop the study
                _stop(study)
            elif self.budget_callback is not None and status != "killed":
                self._after_trial(study, cost)
        if self.energy_objective:
            return (*values, cost.energy_kwh)  # type: ignore[misc]
        return values[0] if len(values) == 1 else values  # type: ignore[arg-type]

    def _finalize(
        self,
        trial: Trial,
        run: _TrialRun,
        state: _state.StudyState,
        status: str,
        values: list[float] | None,
    ) -> tuple[Cost, bool]:
        """Close the trial's meter window and ledger row; its cost, and whether the ledger
        recorded it.

        A ledger that cannot be written now (locked past its timeout, a database that went
        away) must not cost the user the trial's result: the error is logged and kept in
        :attr:`ledger_error`, the trial keeps its outcome (the caller stops the study: no
        budget can be kept without the ledger), its attributes carry the measured cost and
        ``hpaudit_ledger_error``, and its row, still running, is reaped as killed later with
        the energy of its last checkpoint.
        """
        live = run.live
        _state.unregister(live)
        heartbeat.remove(run)
        value = values[0] if values and len(values) == 1 else None
        error: Exception | None = None
        with run.lock:
            run.closed = True
            measurement = run.meter.close(run.token) if run.token is not None else _NOTHING
            try:
                # Reports the throttle left unwritten go in with the final row: it keeps the
                # last step (and, for a trial without a final value, the last reported value).
                cost = self.ledger.finalize(
                    live.window_id,
                    measurement,
                    status=status,
                    value=value if value is not None else run.value,
                    values=values if values and len(values) > 1 else None,
                    params=dict(trial.params),  # suggested after the window opened
                    step=run.step,
                )
            except Exception as exc:
                error, cost = exc, run.estimate(measurement)
        live.cost = cost
        attrs: dict[str, Any] = {
            "energy_kwh": cost.energy_kwh,
            "co2e_kg": cost.co2e_kg,
            "energy_source": str(measurement.source or "none"),
        }
        if status == "pruned" and live.prune_reason:
            attrs["hpaudit_prune_reason"] = live.prune_reason
        if error is not None:
            self._ledger_failed(trial, error)
            attrs["hpaudit_ledger_error"] = str(error)
        else:
            state.observe(live.window_id, cost, live.steps_done, status)
        set_user_attrs(trial, attrs)
        return cost, error is None

    def _ledger_failed(self, trial: Trial, error: Exception) -> None:
        if self.ledger_error is None:
            self.ledger_error = error
        _log.error(
            "stopping study %r: trial %d's ledger row could not be finalised (%s); the trial "
            "keeps its result, and its row is reaped as killed with its last checkpoint",
            trial.study.study_name,
            trial.number,
            error,
        )

    def _after_trial(self, study: optuna.Study, cost: Cost) -> None:
        """Run the budget callback on the trial just finalised; its failure stops the study
        (kept in :attr:`callback_error`) rather than failing a trial that is already final."""
        assert self.budget_callback is not None
        try:
            self.budget_callback.after_trial(study, cost)
        except Exception as exc:  # e.g. the ledger's database went away
            if self.callback_error is None:
                self.callback_error = exc
            _log.error("stopping study %r: the budget callback failed: %s", study.study_name, exc)
            _stop(study)

    # -- idle between trials ------------------------------------------------------------------
    def record_idle(self, study: optuna.Study) -> None:
        """Write what the meter measured between this process's trials and has not yet been
        written as an ``idle`` row of ``study`` (:func:`hpsearch_budget.optuna.optimize` calls
        it when the sweep ends). Trials write theirs once ``checkpoint_interval_s`` of such
        gaps has accumulated."""
        self._record_idle(study.study_name, shared_meter(self.meter))

    def _record_idle(self, study: str, meter: SharedMeter) -> None:
        """One ``idle`` ledger row for what ``meter`` kept; a ledger that cannot take it now
        gets it back into the meter (written with the next one), and the sweep goes on."""
        idle = meter.take_idle(self.checkpoint_interval_s)
        project, user = self._identity(study)
        try:
            write_idle(
                self.ledger,
                study,
                idle,
                project=project,
                user=user,
                checkpoint_interval_s=self.checkpoint_interval_s,
            )
        except Exception as exc:  # e.g. the database is locked past its timeout
            meter.keep_idle(idle)
            _log.warning("study %r: idle between trials not written yet (%s); kept", study, exc)

    # -- reservations -------------------------------------------------------------------------
    def _stops_on(self, index: int) -> bool:
        """Whether limit ``index`` is a policy cap under ``on_exceed = "stop"``."""
        return is_policy_cap(index) and self.policy is not None and self.policy.on_exceed == "stop"

    def _warner(self, study: str, project: str, user: str) -> Any:
        """The ``on_exceed = "warn"`` watcher of ``study`` (one per study, made on first use)."""
        from hpsearch_budget.policy._sweep import CapWarner

        warners = self.__dict__.setdefault("_warners", {})
        if study not in warners:
            live = self._live_policy
            warners[study] = CapWarner(self.ledger, live, study, project, user, ttl_s=0.0)
        return warners[study]

    def _identity(self, study: str) -> tuple[str, str]:
        """Project and user stored on the row, as the policy's per-project / per-user caps
        look them up (argument, else $HPAUDIT_PROJECT / $HPAUDIT_USER, else study / login)."""
        from hpsearch_budget.policy import resolve_identity

        found = self._who.get(study)
        if found is None:
            project, user = resolve_identity(study, self.project, self.user)
            found = self._who[study] = (project, user)
        return found

    def _first_reservation(
        self, state: _state.StudyState, study: str, project: str, user: str
    ) -> tuple[Cost, list[tuple[Any, Cost]]] | None:
        """``(forecast, limits)`` for the new trial's window to reserve as it opens (one
        ledger transaction, :meth:`Ledger.open_window`), or None when the study was stopped:
        :meth:`_reserve` then prunes the trial once its window is open."""
        from hpsearch_budget.policy._sweep import stop_reason

        if stop_reason(self.ledger.url, study) is not None:
            return None
        named = self._limits_now(state, study, project, user)
        return state.forecaster.new_trial(), [(s, c) for s, c, _ in named]

    def _limits_now(
        self, state: _state.StudyState, study: str, project: str, user: str
    ) -> list[tuple[Any, Cost, str]]:
        """The named limits a new trial reserves under, once the policy's warning is checked
        and the forecaster knows what other workers finished."""
        named = _state.named_limits(study, self.budget, self.policy, project, user)
        if self.policy is not None and self.policy.on_exceed == "warn":
            self._warner(study, project, user).check()
        state.sync()
        return named

    def _reserve(
        self,
        trial: Trial,
        state: _state.StudyState,
        live: _state.LiveTrial,
        project: str,
        user: str,
    ) -> None:
        """Reserve the trial's forecast cost; wait while other trials hold the room it needs;
        stop the study (and prune this trial) when no release could ever make room."""
        from hpsearch_budget.policy._sweep import request_stop, stop_reason

        stopped = stop_reason(self.ledger.url, live.study)
        if stopped is not None:  # on_exceed = "stop": no new trial starts
            live.prune_reason = self.stopped = stopped
            _stop(trial.study)
            raise optuna.TrialPruned(stopped)
        named = self._limits_now(state, live.study, project, user)
        limits = [(s, c) for s, c, _ in named]
        accounting = Accounting(self.ledger, limits, ttl_s=0.0)
        wait, reaped_at = _RETRY_S[0], time.monotonic()
        while True:
            amount = state.forecaster.new_trial()
            if self.ledger.try_reserve(live.window_id, amount, limits):
                live.reserved = amount
                return
            if not _room_after_release(accounting, amount):
                index, reason = _no_room_reason(named, accounting, amount, trial.study)
                live.prune_reason = self.stopped = reason
                if self._stops_on(index):  # running trials stop at their next step
                    request_stop(self.ledger.url, live.study, reason)
                _stop(trial.study)
                raise optuna.TrialPruned(reason)
            # Others hold reservations that will be released: wait for them, and reap
            # windows of crashed workers so their reservations do not hold the room forever.
            if time.monotonic() - reaped_at > 30.0:
                self.ledger.reap()
                reaped_at = time.monotonic()
            time.sleep(wait * (0.5 + random.random()))
            wait = min(_RETRY_S[1], wait * 2)
            state.sync()


def metered(
    objective: Callable[[Trial], Any],
    ledger: Ledger | str | None = None,
    meter: Meter | None = None,
    energy_objective: bool = False,
    **options: Any,
) -> MeteredObjective:
    """Wrap an Optuna objective so every trial is metered into the ledger.

    Args:
        objective: ``objective(trial) -> value(s)``, unchanged.
        ledger: a :class:`~hpsearch_budget.ledger.Ledger`, a database URL, or None
            (``$HPAUDIT_LEDGER`` or ``sqlite:///hpaudit.db``).
        meter: where joules come from (None: the process's
            ``hpsearch_budget.meters.shared_meter()``, as this worker's part of machine-wide
            RAPL counters: :class:`~hpsearch_budget.attribution.ProcessShareMeter`).
        energy_objective: also return the trial's energy (kWh at the device) as the last
            objective value; the study must have one more direction than the objective returns,
            and that last direction must be ``minimize``.
        options: ``budget`` (reserve each trial's forecast cost before it runs), ``policy``
            (None finds the lab's file, here: its caps are reserved under even without a
            budget, its defaults charge the rows; an edit of the file applies to the next
            trial within a second; False opts out),
            ``max_steps``, ``project``, ``user``, ``checkpoint_interval_s`` (the heartbeat
            writes a row silent that long), ``min_checkpoint_interval_s`` (default 1 s: how
            long a report covered by its reservation may wait for its ledger write far from
            the limit; 0 writes every report; see the module docstring),
            ``budget_callback`` (a :class:`BudgetCallback` run after each trial from inside the
            objective, once the trial's row is final, instead of passing it to
            ``study.optimize(callbacks=...)``: Optuna reads every finished trial back from its
            storage before it calls any callback, 1.7 ms a trial on SQLite; an error it raises
            stops the study and is kept in ``callback_error``); see
            :class:`MeteredObjective`. :func:`hpsearch_budget.optuna.optimize` sets them.
    """
    return MeteredObjective(objective, ledger, meter, energy_objective, **options)


# -- helpers -----------------------------------------------------------------------------------
def _open_ledger(ledger: Ledger | str | None) -> Ledger:
    from hpsearch_budget.ledger import Ledger

    if isinstance(ledger, Ledger):
        return ledger
    if ledger is None or isinstance(ledger, str):
        return Ledger(ledger)
    raise HpauditInputError(
        f"ledger must be a Ledger, a database URL or None, got {type(ledger).__name__}"
    )


def _room_after_release(accounting: Accounting, amount: Cost) -> bool:
    """Whether ``amount`` would fit once every running reservation is released."""
    return fits(amount, accounting.left_after_release(fresh=True))


def _no_room_reason(
    named: Sequence[tuple[Any, Cost, str]],
    accounting: Accounting,
    amount: Cost,
    study: optuna.Study,
) -> tuple[int, str]:
    """(index, reason) of the limit that leaves no room: the study budget or a policy cap."""
    used = accounting.used_by_limit()
    limits = [c for _, c, _ in named]
    index, name = binding_limit([n for *_, n in named], limits, used, amount)
    of = f"the {name} of {limits[index].describe_limit()}"
    # Figures in the binding limit's units: a USD cap's message shows USD, not kWh.
    spent = f"{used[index].describe_in(limits[index])} spent or reserved{spent_label(study)}"
    if used_fraction(used[index], limits[index]) >= 1.0:  # no forecast needed to say why
        return index, f"budget: {of} is spent: {spent}"
    return index, (
        f"budget: a typical trial (forecast {amount.describe_in(limits[index])}, estimate) does "
        f"not fit what is left of {of}: {spent}"
    )


def _stop(study: optuna.Study) -> None:
    """Stop this worker's optimize loop (a no-op when the objective is called directly)."""
    with contextlib.suppress(RuntimeError):
        study.stop()

"""The driver's view of a budget: what is left, what each running trial has reserved.

Shared by :class:`~hpsearch_budget.ray.BudgetStopper` and
:class:`~hpsearch_budget.ray.BudgetScheduler`. Trials measure themselves in their workers
(:func:`~hpsearch_budget.ray.metered`) and report their window's cost with every result; at each
result the guard reserves, atomically in the ledger, the cost the trial is forecast to still
spend (``Ledger.try_reserve``). A trial whose reservation fails no longer fits and is stopped.
Several drivers (experiments) sharing a policy cap share it through the same reservations.

Overshoot bound: a trial is checked at every report, so the budget can be passed by at most one
report interval of each running trial (plus the forecast error of trials that had no finished
trial to learn from).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hpsearch_budget.budget import Budget, Cost, TrialForecaster, forecast_remaining
from hpsearch_budget.budget._accounting import require_ttl_s
from hpsearch_budget.errors import BudgetExceededError, HpauditInputError, LedgerError
from hpsearch_budget.ray._metered import LEDGER_FINAL_ERROR_KEY

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger, Scope
    from hpsearch_budget.policy import Policy

_log = logging.getLogger(__name__)
_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")

# What this driver has reserved per (ledger URL, window): a BudgetStopper and a BudgetScheduler
# used together see the same results and must not reserve the same forecast twice.
_RESERVED: dict[tuple[str, int], Cost] = {}


@dataclass
class _Window:
    """One running ledger window as the driver sees it."""

    trial_id: str
    window: int
    base_steps: int  # the trial's training_iteration before this window (restored trials)
    steps: int = 0  # reports in this window
    cost: Cost = field(default_factory=Cost)


def result_cost(result: Mapping[str, Any]) -> Cost:
    """The window cost a metered result carries."""
    return Cost(*(float(result.get(f) or 0.0) for f in _FIELDS))


def require_metered(result: Mapping[str, Any], who: str) -> int:
    window = result.get("hpaudit_window")
    if window is None:
        raise HpauditInputError(
            f"{who} got a result without energy figures (trial {result.get('trial_id')}); wrap "
            "the trainable with hpsearch_budget.ray.metered(train, ledger) so every trial is "
            "metered into the ledger"
        )
    return int(window)


class BudgetGuard:
    """Reservations and the exhaustion test for one study's budget (and policy caps).

    Args:
        budget: the study's budget.
        ledger: the shared ledger the metered trainables write to.
        study: ledger study name; default the Tune experiment name, learnt from the first trial.
        policy: a lab :class:`~hpsearch_budget.policy.Policy` whose caps apply on top.
        project, user: who the sweep belongs to, for the policy's caps.
        forecaster: the per-trial cost model; default learns from this sweep's finished trials.
        max_steps: reports of a complete trial, if known (else learnt).
        ttl_s: how long a read of spent / committed is reused between results.
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
        ttl_s: float = 1.0,
    ) -> None:
        from hpsearch_budget.ledger import Ledger

        if not isinstance(budget, Budget):
            raise HpauditInputError(
                f"budget must be a hpsearch_budget.Budget, got {type(budget).__name__}; "
                "e.g. Budget(co2e_kg=2.0)"
            )
        if not isinstance(ledger, Ledger):
            raise HpauditInputError(
                f"ledger must be a hpsearch_budget.Ledger, got {type(ledger).__name__}; "
                'e.g. Ledger("postgresql+psycopg://user@host/hpaudit")'
            )
        from hpsearch_budget.policy._reload import follow_policy

        self.budget = budget
        self.ledger = ledger
        # None finds the lab's file (hpaudit.toml, [tool.hpaudit], $HPAUDIT_POLICY) here, so a
        # malformed one fails before any trial, and follows it: an edit applies within a second
        # (the last good version while it is broken). False opts out; a Policy never changes.
        self._live_policy = follow_policy(policy)
        self.project = project
        self.user = user
        self.forecaster = forecaster or TrialForecaster(max_steps=max_steps)
        self.ttl_s = require_ttl_s(ttl_s)
        self.study: str | None = None
        self.limits: list[tuple[Scope, Cost]] = []
        self.names: list[str] = []  # the limits' names: "project 'nlp' monthly CO2e cap"
        self._limits_policy: Policy | None = None  # the policy version they come from
        self._until = math.inf  # when the month of the monthly caps among them ends
        #: Why the sweep was stopped (no new trial, all stop): a policy cap under on_exceed =
        #: "stop", or a ledger that failed (:meth:`stop_for_ledger`).
        self.stop_reason: str | None = None
        self._ledger_stop = False  # stop_reason is a ledger failure's: not kept by a restore
        self.last_refusal: str | None = None  # why the last trial refused no longer fits
        self._warner: Any = None
        self.windows: dict[int, _Window] = {}
        self.by_trial: dict[str, int] = {}
        self.refused = 0
        self._releasing: dict[int, Cost] = {}  # window -> unspent room its worker will release
        self._read_at = -math.inf
        self._used: list[tuple[Cost, Cost]] = []
        self._ledger_warned = False  # a ledger failure was logged (once per guard)
        if study is not None:
            self.bind(study)

    # -- state --------------------------------------------------------------------------------

    @property
    def policy(self) -> Policy | None:
        """The lab policy in force now (None: opted out)."""
        from hpsearch_budget.policy._reload import current

        return current(self._live_policy)

    def __getstate__(self) -> dict[str, Any]:
        # Tuner.restore unpickles the scheduler / stopper: windows of the old run are dead.
        state = dict(self.__dict__)
        state.update(windows={}, by_trial={}, _read_at=-math.inf, _used=[], _releasing={})
        if state.get("_ledger_stop"):  # its message says: fix the ledger, then restore
            state.update(stop_reason=None, last_refusal=None, _ledger_stop=False)
        state["_ledger_warned"] = False  # a new run logs a failing ledger again
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "policy" in state:  # pickled by a version that read its policy once: keep it fixed
            from hpsearch_budget.policy._reload import follow_policy

            old = state.pop("policy")
            state["_live_policy"] = None if old is None else follow_policy(old)
        self.__dict__.update(state)

    def bind(self, study: str) -> None:
        """Fix the study (first trial) and refuse to start when the budget is already spent."""
        if self.study == study:
            return
        from hpsearch_budget.policy._sweep import CapWarner

        self.study = study
        self._set_limits(study)
        self._warner = CapWarner(self.ledger, self._live_policy, study, self.project, self.user)
        if self.over(fresh=True):
            index, name = self.binding()
            if index == 0:
                spent = self.spent()
                rows = self.ledger.entries(study)  # once, refusing: say if it is an estimate
                est = ", estimated" if (rows["source"] == "estimated").any() else ""
                raise BudgetExceededError(
                    f"the budget of study {study!r} is already spent before this sweep starts "
                    f"({self.describe(spent)}{est}); raise the budget, or start a new study name"
                )
            raise BudgetExceededError(
                f"sweep {study!r} cannot start: the {name} is used up; raise the cap in the "
                f'policy file, wait for it to reset, or set on_exceed = "warn"'
            )
        self._warner.check(fresh=True)

    def _set_limits(self, study: str) -> None:
        """The limits of ``study``: its budget and the policy's caps of this month."""
        from hpsearch_budget.policy._sweep import enforced_limits, limits_until

        policy = self._limits_policy = self.policy
        named = enforced_limits(study, self.budget.as_cost(), policy, self.project, self.user)
        self.limits = [(scope, limit) for scope, limit, _ in named]
        self.names = [name for *_, name in named]
        self._until = limits_until(named)
        self._read_at = -math.inf

    def _current(self) -> None:
        """Look the limits up again when the policy file was edited (its new caps apply from
        this result on), or once the calendar month of the monthly caps has ended (a sweep
        running across it, or restored later): the new month's caps apply."""
        from hpsearch_budget.policy._sweep import expired

        if self.study is None:
            return
        edited = self.policy is not getattr(self, "_limits_policy", None)
        if edited or expired(getattr(self, "_until", -math.inf)):
            self._set_limits(self.study)

    def binding(self, need: Cost | None = None) -> tuple[int, str]:
        """(index, name) of the limit that binds once ``need`` more is spent: the study's
        budget (index 0) or a policy cap."""
        from hpsearch_budget.policy._sweep import binding_limit

        used = [spent + committed for spent, committed in self._read(False)]
        limits = [limit for _, limit in self.limits]
        return binding_limit(self.names, limits, used, need or Cost())

    def refuse(self, trial_id: str, need: Cost | None = None) -> str:
        """Why ``trial_id`` no longer fits, naming the binding limit; under ``on_exceed =
        "stop"`` a binding policy cap also stops the sweep (no new trial, all stop)."""
        index, name = self.binding(need)
        reason = f"trial {trial_id}: its forecast no longer fits the {name}"
        stops = index > 0 and self.policy is not None and self.policy.on_exceed == "stop"
        if stops and self.stop_reason is None:
            # Every trial stopped for it carries this reason: say whose forecast ended it.
            self.stop_reason = (
                f'on_exceed = "stop" ended the sweep: {name} reached (the forecast of trial '
                f"{trial_id} no longer fitted)"
            )
            _log.warning("hpaudit: stopping study %r: %s", self.study, self.stop_reason)
        self.last_refusal = reason
        return reason

    def exhausted_reason(self) -> str:
        """Why :meth:`exhausted` holds, naming the binding limit (the study's budget or a cap)."""
        try:
            _, name = self.binding()
            over = self.over()
        except LedgerError:
            return "budget exhausted"
        if over:
            return f"the {name} is spent"
        return f"no new trial fits what is left of the {name}, and none is running"

    def refusal(self) -> str:
        """Why the last refused trial no longer fits (the generic reason if none was named)."""
        return self.last_refusal or "its forecast no longer fits the budget"

    def _read(self, fresh: bool) -> list[tuple[Cost, Cost]]:
        self._current()
        if fresh or time.monotonic() - self._read_at > self.ttl_s:
            self._used = [(self.ledger.spent(s), self.ledger.committed(s)) for s, _ in self.limits]
            self._read_at = time.monotonic()
        return self._used

    def spent(self, fresh: bool = False) -> Cost:
        return self._read(fresh)[0][0]

    def over(self, fresh: bool = False) -> bool:
        """Whether spent alone has reached some limit (the first pair is the study's)."""
        used = self._read(fresh)
        return any(_reached(s, limit) for (s, _), (_, limit) in zip(used, self.limits, strict=True))

    def left(self, fresh: bool = False) -> Cost:
        """Componentwise min over limits of limit - spent - committed (inf where unlimited)."""
        out = Cost(math.inf, math.inf, math.inf, math.inf)
        for (spent, committed), (_, limit) in zip(self._read(fresh), self.limits, strict=True):
            rest = Cost(
                *(
                    math.inf
                    if math.isinf(getattr(limit, f))
                    else getattr(limit, f) - getattr(spent, f) - getattr(committed, f)
                    for f in _FIELDS
                )
            )
            out = Cost(*(min(getattr(out, f), getattr(rest, f)) for f in _FIELDS))
        return out

    def describe(self, spent: Cost) -> str:
        fractions = self.budget.used_fractions(spent)
        binding = max(fractions, key=lambda k: fractions[k])
        return f"{fractions[binding]:.0%} of {self.budget.describe()}, binding {binding}"

    def running(self) -> int:
        return len(self.windows)

    # -- results ------------------------------------------------------------------------------

    def on_result(self, trial_id: str, result: Mapping[str, Any], who: str) -> bool:
        """Reserve the trial's forecast remaining cost; False when it no longer fits. While
        the ledger cannot be read or written the trial runs on (logged once): nothing is
        stopped on figures nobody can check. A result saying the ledger could not record a
        trial's end ends the sweep (:attr:`stop_reason`): no budget is kept without it."""
        window_id = require_metered(result, who)
        reported = str(result.get("hpaudit_study"))
        if self.study is None:
            self.bind(reported)
        elif reported != self.study:
            raise HpauditInputError(
                f"{who} budgets study {self.study!r} but the trial writes to study "
                f"{reported!r}; pass the same study= to metered() and to {who}"
            )
        final_error = result.get(LEDGER_FINAL_ERROR_KEY)
        if final_error is not None:
            self._unrecorded_end(trial_id, str(final_error))
            return True  # it has ended: the function returned
        try:
            return self._reserve(trial_id, window_id, result)
        except LedgerError as error:
            self.ledger_failed(error)
            return True

    def ledger_failed(self, error: LedgerError) -> None:
        """The ledger could not be read or written now: log it once; the next read is fresh."""
        self._read_at = -math.inf
        if not self._ledger_warned:
            self._ledger_warned = True
            _log.warning(
                "hpaudit: study %r: not stopping trials while the ledger fails (%s); the budget "
                "is checked again at the next result",
                self.study,
                error,
            )

    def stop_for_ledger(self, reason: str) -> None:
        """End the sweep because the ledger failed; unlike a cap's stop, a restored sweep
        (Tuner.restore, once the ledger is fixed) does not inherit it."""
        if self.stop_reason is None:
            self.stop_reason, self._ledger_stop = reason, True
            _log.error("hpaudit: stopping study %r: %s", self.study, reason)

    def _unrecorded_end(self, trial_id: str, error: str) -> None:
        self.stop_for_ledger(
            f"the ledger could not record the end of trial {trial_id} ({error}); the budget "
            "cannot be kept without it: the sweep ended. Fix the ledger, then Tuner.restore "
            "the experiment"
        )

    def _reserve(self, trial_id: str, window_id: int, result: Mapping[str, Any]) -> bool:
        self._current()  # a new calendar month: reserve under its caps
        w = self._window(trial_id, window_id, result)
        w.steps = int(result.get("training_iteration", w.base_steps + w.steps + 1)) - w.base_steps
        w.cost = result_cost(result)
        if self._warner is not None:
            self._warner.check()  # on_exceed = "warn": log a passed cap once
        if self.stop_reason is not None and not result.get("done"):
            self.last_refusal = self.stop_reason
            return False  # on_exceed = "stop": it finished this step; now it stops
        if result.get("done"):
            return True  # the function returned: its window is final, nothing left to reserve
        key = (self.ledger.url, window_id)
        held = _RESERVED.get(key, Cost())
        # The ledger counts a window's unspent reservation (reserved - spent) as committed and
        # checks spent + committed + amount <= limit. Asking for the forecast minus what is
        # still unspent makes that check exactly "spent + remaining of this trial fits".
        remaining = self._remaining(w)
        unspent = (held - w.cost).clip()
        more = (remaining - unspent).clip()
        if more == Cost():
            # Its forecast is inside what it holds (a reservation only grows until the window
            # ends): it fits unless the budget is already spent.
            if self.over():
                self.refuse(trial_id)
                return False
            return True
        try:
            reserved = self.ledger.try_reserve(window_id, more, self.limits)
        except LedgerError as error:
            if "already finalised" in str(error):
                return True  # it ended (returned, failed) while this result was in flight
            raise
        if not reserved:
            self._read_at = -math.inf
            _log.debug(
                "hpaudit: window %s (%s J spent) cannot reserve %s J more: %s",
                window_id,
                w.cost.energy_j,
                more.energy_j,
                [(s.energy_j, c.energy_j) for s, c in self._read(True)],
            )
            self.refuse(trial_id, more)
            return False
        held = held + more
        # A window that spent past its reservation (its first report, or a forecast too low)
        # is now short of spent + remaining by that much: top it up (the check is now exact).
        short = (w.cost + remaining - held).clip()
        if short != Cost() and self.ledger.try_reserve(window_id, short, self.limits):
            held = held + short
        _RESERVED[key] = held
        # The spend figures moved: the next exhaustion test must not reuse a stale read.
        self._read_at = min(self._read_at, time.monotonic() - self.ttl_s / 2)
        return True

    def fits_alone(self, trial_id: str) -> bool:
        """Whether spent + this trial's forecast remaining cost fits every limit, ignoring
        other trials' reservations (room they would give back if they stopped now)."""
        window_id = self.by_trial.get(trial_id)
        w = self.windows.get(window_id) if window_id is not None else None
        if w is None:
            return True
        remaining = self._remaining(w)
        try:
            used = self._read(True)
        except LedgerError as error:
            self.ledger_failed(error)
            return True  # not known: stop no trial for it
        return all(
            _within(spent + remaining, limit)
            for (spent, _), (_, limit) in zip(used, self.limits, strict=True)
        )

    def _window(self, trial_id: str, window_id: int, result: Mapping[str, Any]) -> _Window:
        w = self.windows.get(window_id)
        if w is None:
            iteration = int(result.get("training_iteration", 1))
            w = self.windows[window_id] = _Window(trial_id, window_id, base_steps=iteration - 1)
            old = self.by_trial.get(trial_id)
            if old is not None and old != window_id:
                self.windows.pop(old, None)
            self.by_trial[trial_id] = window_id
        return w

    def _remaining(self, w: _Window) -> Cost:
        expected = self.forecaster.expected_steps()
        if expected is not None and w.steps > 0:
            return forecast_remaining(w.cost, w.steps, expected - w.base_steps)
        return (self.forecaster.new_trial() - w.cost).clip()

    def finished(self, trial_id: str, *, complete: bool) -> None:
        """A trial ended: teach the forecaster, forget its window."""
        window_id = self.by_trial.pop(trial_id, None)
        w = self.windows.pop(window_id, None) if window_id is not None else None
        if window_id is not None:
            held = _RESERVED.pop((self.ledger.url, window_id), None)
            if held is not None and w is not None:  # released when its worker finalises
                self._releasing[window_id] = (held - w.cost).clip()
        if self._warner is not None:
            self._warner.check(fresh=True)  # on_exceed = "warn": a trial's end may pass a cap
        if w is None or w.steps <= 0:
            return
        whole = complete and w.base_steps == 0  # a restored window saw only part of the trial
        self.forecaster.observe(w.cost, w.steps, complete=whole)

    # -- admission and exhaustion --------------------------------------------------------------

    def new_trial_fits(self, promised: Cost, room: Cost | None = None) -> bool:
        """Whether one more trial's forecast fits in what is left after ``promised``, plus
        ``room`` about to be released (:meth:`releasing`)."""
        if self.study is None:
            return True
        forecast = self.forecaster.new_trial()
        left = self.left(fresh=True) + (room or Cost())
        return (
            all(
                getattr(forecast, f) + getattr(promised, f) <= getattr(left, f) + 1e-9
                for f in _FIELDS
            )
            and not self.over()
        )

    def releasing(self) -> Cost:
        """The unspent reservations of trials that ended here but whose windows are still
        open in the ledger: their workers release them as they finalise (one ledger read)."""
        if not self._releasing:
            return Cost()
        rows = self.ledger.entries(study=self.study, open_only=True)
        still = set(rows.loc[rows["status"] == "running", "id"]) if not rows.empty else set()
        self._releasing = {w: c for w, c in self._releasing.items() if w in still}
        return sum(self._releasing.values(), Cost())

    def exhausted(self) -> bool:
        """Spent has reached a limit, or a trial was refused and nothing running could make
        room for another one (no reservation left and a new trial does not fit)."""
        if self.study is None:
            return False
        if self.stop_reason is not None:
            return True
        try:
            return self._exhausted()
        except LedgerError as error:
            self.ledger_failed(error)
            return False  # not known: the sweep goes on

    def _exhausted(self) -> bool:
        if self.over():
            return True
        if self.refused:
            idle = all(
                getattr(committed, f) <= 0.0 for _, committed in self._read(False) for f in _FIELDS
            )
            return idle and not self.new_trial_fits(Cost())
        return False


def _within(total: Cost, limit: Cost) -> bool:
    # the ledger's own slack for float summation order
    return all(getattr(total, f) <= getattr(limit, f) * (1 + 1e-9) + 1e-12 for f in _FIELDS)


def _reached(spent: Cost, limit: Cost) -> bool:
    return any(
        math.isfinite(getattr(limit, f)) and getattr(spent, f) >= getattr(limit, f) for f in _FIELDS
    )

"""``BudgetPruner``: prune the least promising running trials when the budget cannot pay for all.

At each ``trial.should_prune()`` the pruner asks the wrapped pruner (Median, Hyperband, ...)
first. Then it forecasts the trial's remaining cost (its energy per step so far x steps left;
steps from ``max_steps`` or learned from complete trials). While spent + committed + what the
running trials will need beyond their reservations fits every limit, the trial goes on. When it
does not, the running trials of the study are ranked by their latest intermediate value against
every trial's value at the same step, and the least promising are pruned first until the rest
fit; each trial prunes itself when it is among them, at its next report.

Overshoot bound: a trial is checked against fresh ledger figures at every report once the
study is near its limit, so after the budget is spent every running trial stops at its next
report. Hence ``spent <= budget + one checkpoint interval (report to report) of each running
trial`` -- tested with 4 worker processes sharing one ledger. (The heartbeat that checkpoints
silent trials every ``checkpoint_interval_s`` keeps their rows alive but cannot prune them:
pruning happens where the objective calls ``should_prune``.)

Hot path: far from the limit (spent + committed < ``near_fraction`` of it) a report costs no
ledger read at all: the figures are cached for ``ttl_s`` seconds, and under half of
``near_fraction`` a trial metered on the wall clock skips them for its reports in the next
``FAR_S`` (0.1 s). Spending inside reservations
moves cost from committed to spent, so a stale spent + committed stays nearly exact. The pruner
shares its verdict per study with ``metered`` (``StudyState.near``): far from the limit reports
covered by their trial's reservation may skip the ledger write (see
:mod:`hpsearch_budget.optuna._metered`); near it every report is written, the first near one
by the pruner itself before it reads fresh figures.

Example:

    >>> import optuna
    >>> from hpsearch_budget import Budget
    >>> from hpsearch_budget.ledger import Ledger
    >>> from hpsearch_budget.optuna import BudgetPruner
    >>> import tempfile
    >>> ledger = Ledger(f"sqlite:///{tempfile.mkdtemp()}/ledger.db")
    >>> pruner = BudgetPruner(Budget(co2e_kg=1.0), ledger, wrapped=optuna.pruners.MedianPruner())
    >>> study = optuna.create_study(pruner=pruner)
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.budget._accounting import Accounting, fits, used_fraction
from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.optuna import _state
from hpsearch_budget.optuna._limits import (
    NamedAccounting,
    StudyLimits,
    require_budget,
    spent_label,
)
from hpsearch_budget.policy._sweep import is_policy_cap, request_stop, stop_reason

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

_log = logging.getLogger(__name__)

#: How long (s) a trial's reports skip the pruner's figures once it found the study under half
#: of ``near_fraction`` (see ``BudgetPruner._far_for``).
FAR_S = 0.1


@dataclass(frozen=True, slots=True)
class _Candidate:
    number: int
    rank: float  # fraction of trials better at the same step: 1 = least promising
    excess: Cost  # forecast remaining beyond the unspent reservation
    reserved_left: Cost  # unspent reservation, given back when the trial is pruned
    step: int | None


class BudgetPruner(StudyLimits, BasePruner):
    """An :class:`optuna.pruners.BasePruner` that keeps a study inside its :class:`Budget`.

    Args:
        budget: the study's limit (kg CO2e, kWh, USD, GPU-hours).
        ledger: the ledger the metered objective writes to (a :class:`Ledger` or a URL).
        wrapped: a pruner asked first; its decision stands (None: budget only).
        max_steps: steps of a complete trial (last step + 1); None learns it from complete
            trials.
        policy: the lab policy; None finds the lab's file, here (``hpaudit.toml``,
            ``[tool.hpaudit]``, ``$HPAUDIT_POLICY``; a malformed one raises
            ``InvalidPolicyError``), and follows it: an edit applies within a second at the
            next report; False opts out. Its caps apply with its ``on_exceed``:
            "prune" prunes the least promising trials, "stop" prunes every running trial at
            its next report and stops the study, "warn" only logs; the reason names the cap.
        project, user: who the sweep belongs to, for the policy's caps.
        ttl_s: how long ledger figures are reused far from the limit.
        near_fraction: from which used fraction of the limit every report reads fresh figures.

    Trials must run under :func:`~hpsearch_budget.optuna.metered` (the pruner reads their cost
    from it); other trials are judged by the wrapped pruner only.
    """

    def __init__(
        self,
        budget: Budget,
        ledger: Ledger | str,
        wrapped: BasePruner | None = None,
        max_steps: int | None = None,
        *,
        policy: Any = None,
        project: str | None = None,
        user: str | None = None,
        ttl_s: float = 1.0,
        near_fraction: float = 0.9,
    ) -> None:
        require_budget(budget)  # first, as before: its error precedes the others
        if wrapped is not None and not isinstance(wrapped, BasePruner):
            raise HpauditInputError(
                f"wrapped must be an optuna pruner (e.g. optuna.pruners.MedianPruner()), "
                f"got {type(wrapped).__name__}"
            )
        if max_steps is not None and not (isinstance(max_steps, int) and max_steps > 0):
            raise HpauditInputError(f"max_steps must be a positive integer, got {max_steps!r}")
        if not (_is_number(near_fraction) and 0.0 < near_fraction <= 1.0):
            raise HpauditInputError(
                f"near_fraction must be a fraction of the budget in (0, 1], e.g. 0.9; got "
                f"{near_fraction!r}"
            )
        super().__init__(budget, ledger, policy=policy, project=project, user=user, ttl_s=ttl_s)
        self.wrapped = wrapped
        self.max_steps = max_steps
        self.near_fraction = near_fraction
        self._victim_cache: dict[str, tuple[float, set[int], str]] = {}
        # One ranking at a time: threads of one worker (n_jobs > 1) must not overwrite a fresh
        # ranking with one computed concurrently from an older view of the running trials.
        self._victim_lock = threading.Lock()
        self._warned = False
        self._ledger_warned = False
        self._cap_binds: dict[str, bool] = {}  # per study: a policy cap (not the budget) binds

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        try:
            return self._prune(study, trial)
        except LedgerError as exc:
            # The ledger cannot be read now (locked past its timeout, a lost connection): the
            # trial runs on under its reservation rather than fail; if the ledger is still
            # down when it ends, its end stops the study (metered keeps the trial's result).
            if not self._ledger_warned:
                self._ledger_warned = True
                _log.warning("BudgetPruner: not pruning while the ledger fails: %s", exc)
            return False

    def _prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        live = _state.live_trial(study.study_name, trial.number)
        if self.wrapped is not None and self.wrapped.prune(study, trial):
            if live is not None:
                live.prune_reason = f"{type(self.wrapped).__name__}: not promising"
            return True
        if live is None:
            self._warn_unmetered()
            return False
        stopped = stop_reason(self.ledger.url, study.study_name)
        if stopped is not None:  # on_exceed = "stop": every running trial stops at this step
            live.prune_reason = stopped
            return True
        if time.monotonic() < live.far_until:
            return False  # far from the limit a moment ago (see _far_for)
        state = _state.study_state(self.ledger, study.study_name, self.max_steps)
        acc = self._accounting_for(study.study_name)
        # The cached spent + committed misses only spending beyond reservations since it was
        # read. Add, for this process's running trials, what they spent and will need beyond
        # their reservations (an over-estimate: some is already in the cached spent); other
        # processes' trials show in the ledger at the next read.
        pressure = sum((_pressure(state, t) for t in _state.live_trials(study.study_name)), Cost())
        limit = self.budget.as_cost()
        used = _near(acc, pressure, limit)
        if used < self.near_fraction:
            state.near = False  # metered may throttle the ledger writes of reports
            live.far_until = time.monotonic() + self._far_for(live, used)
            return False  # far from the limit: no ledger read
        # From now on every report of this process's trials reaches the ledger, this one
        # included (it may have been throttled before the study was found near).
        state.near = True
        if live.flush is not None:
            live.flush()
        left = acc.left(fresh=True)
        if not fits(Cost(), acc.left_after_release()):  # spent alone is past a limit: all stop
            index, name = self._binding(study.study_name, acc, Cost())
            live.prune_reason = self._reason(study, acc, f"the {name} is spent", 0, 0, index)
            if is_policy_cap(index) and self._on_exceed() == "stop":
                request_stop(self.ledger.url, study.study_name, live.prune_reason)
                _stop(study)
            return True
        victims, why = self._victims_cached(study, state, acc, left)
        if victims and self._cap_binds.get(study.study_name) and self._on_exceed() == "stop":
            request_stop(self.ledger.url, study.study_name, why)
            _stop(study)
            live.prune_reason = why
            return True
        if trial.number in victims:
            live.prune_reason = why
            return True
        return False

    def _far_for(self, live: _state.LiveTrial, used: float) -> float:
        """How long (s) ``live``'s next reports may skip the figures: ``FAR_S`` (at most
        ``ttl_s``) when the study has used under half of ``near_fraction`` and the trial, metered
        on the wall clock, has reported before (its forecast then moves with its spending, not
        by its first step's jump); else 0. Reaching the limit from there within ``FAR_S`` would
        take spending ``near_fraction / 2`` of it (45 %) in 0.1 s."""
        far = used < self.near_fraction / 2 and live.wall_clock and live.base is not None
        return min(FAR_S, self.ttl_s) if far else 0.0

    def _on_exceed(self) -> str | None:
        return None if self.policy is None else self.policy.on_exceed

    # -- near the limit ------------------------------------------------------------------------
    def _victims_cached(
        self, study: optuna.Study, state: _state.StudyState, acc: NamedAccounting, left: Cost
    ) -> tuple[set[int], str]:
        """The victims, recomputed at most every ``ttl_s``: ranking reads every running row and
        trial, too costly for every report of every trial near the limit."""
        with self._victim_lock:
            now = time.monotonic()
            cached = self._victim_cache.get(study.study_name)
            if cached is not None and now - cached[0] <= self.ttl_s:
                return cached[1], cached[2]
            victims, why = self._victims(study, state, acc, left)
            self._victim_cache[study.study_name] = (time.monotonic(), victims, why)
            return victims, why

    def _victims(
        self, study: optuna.Study, state: _state.StudyState, acc: NamedAccounting, left: Cost
    ) -> tuple[set[int], str]:
        """The running trials to prune, least promising first, until the rest fit."""
        candidates = self._candidates(study, state)
        need = sum((c.excess for c in candidates), Cost())
        if fits(need, left):
            return set(), ""
        victims: set[int] = set()
        for c in sorted(candidates, key=lambda c: (-c.rank, -c.excess.energy_j, -c.number)):
            if fits(need, left):
                break
            victims.add(c.number)
            need, left = need - c.excess, left + c.reserved_left
        total = sum((c.excess for c in candidates), Cost())
        index, name = self._binding(study.study_name, acc, total)
        why = f"the running trials' forecast did not fit the {name}"
        return victims, self._reason(study, acc, why, len(victims), len(candidates), index)

    def _binding(self, study: str, acc: NamedAccounting, need: Cost) -> tuple[int, str]:
        """The limit that binds (the study's budget or a policy cap), remembered per study."""
        index, name = super()._binding(study, acc, need)
        self._cap_binds[study] = is_policy_cap(index)
        return index, name

    def _reason(
        self,
        study: optuna.Study,
        acc: Accounting,
        why: str,
        n_victims: int,
        n_running: int,
        index: int = 0,
    ) -> str:
        spent = acc.used_by_limit()[index] if index else acc.spent()
        of = "spent or reserved under the limit" if index else f"spent of {self.budget.describe()}"
        what = f", so the {n_victims} least promising of {n_running} running were pruned"
        label = spent_label(study)
        shown = spent.describe_in(acc.limits[index][1])  # in the binding limit's units
        return f"budget: {shown}{label} {of}; {why}{what if n_running else ''}"

    def _candidates(self, study: optuna.Study, state: _state.StudyState) -> list[_Candidate]:
        rows = self.ledger.entries(study=study.study_name, open_only=True)
        running = rows[rows["status"] == "running"] if not rows.empty else rows
        trials = study.get_trials(deepcopy=False)
        by_step = _values_by_step(trials)
        values = {t.number: t.intermediate_values for t in trials}
        minimize = study.direction == StudyDirection.MINIMIZE
        out = []
        for row in running.itertuples(index=False):
            number = _as_int(row.trial_number)
            if number is None:
                continue
            live = _state.live_trial(study.study_name, number)
            if live is not None:  # this process's own trials: fresher than the ledger row
                cost, steps, reserved_left = live.cost, live.steps_done, live.reserved_left
                base = live.base
            else:
                cost, steps = _state.row_cost(row), _state.row_steps(row)
                reserved_left, base = (_state.row_reserved(row) - cost).clip(), None
            remaining = state.forecaster.remaining(cost, steps, base=base)
            rank, step = _rank(values.get(number, {}), by_step, minimize)
            out.append(
                _Candidate(number, rank, (remaining - reserved_left).clip(), reserved_left, step)
            )
        return out

    def _warn_unmetered(self) -> None:
        if not self._warned:
            self._warned = True
            _log.warning(
                "BudgetPruner: trial is not metered, so its cost is unknown; wrap the objective "
                "with hpsearch_budget.optuna.metered() or use hpsearch_budget.optuna.optimize()"
            )


def _near(acc: Accounting, pressure: Cost, limit: Cost) -> float:
    """How near the tightest limit spent + committed + this process's pressure are: against
    the budget alone, or against every policy cap as well when there are any."""
    if len(acc.limits) == 1:
        return acc.used_fraction() + used_fraction(pressure, limit)
    return max(
        used_fraction(used + pressure, cap)
        for used, (_, cap) in zip(acc.used_by_limit(), acc.limits, strict=True)
    )


def _pressure(state: _state.StudyState, trial: _state.LiveTrial) -> Cost:
    """What a running trial spent and will spend beyond its reservation (forecast)."""
    remaining = state.forecaster.remaining(trial.cost, trial.steps_done, base=trial.base)
    excess = remaining - trial.reserved_left
    return excess.clip() + (trial.cost - trial.reserved).clip()


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_int(value: Any) -> int | None:
    if value is None or pd.isna(value):
        return None
    return int(value)


def _values_by_step(trials: list[FrozenTrial]) -> dict[int, list[float]]:
    by_step: dict[int, list[float]] = {}
    for t in trials:
        for step, v in t.intermediate_values.items():
            if math.isfinite(v):
                by_step.setdefault(step, []).append(v)
    return by_step


def _rank(
    own: dict[int, float], by_step: dict[int, list[float]], minimize: bool
) -> tuple[float, int | None]:
    """Fraction of trials strictly better than this one at its latest step (0.5 if unknown)."""
    if not own:
        return 0.5, None
    step = max(own)
    value, others = own[step], by_step.get(step, [])
    if not math.isfinite(value):
        return 1.0, step
    if len(others) <= 1:
        return 0.5, step
    better = sum(1 for v in others if (v < value if minimize else v > value))
    return better / (len(others) - 1), step


def _stop(study: optuna.Study) -> None:
    """Stop this worker's optimize loop (a no-op outside ``study.optimize``)."""
    with contextlib.suppress(RuntimeError):
        study.stop()

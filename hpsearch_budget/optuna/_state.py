"""Process-local state shared by ``metered``, ``BudgetPruner`` and ``BudgetCallback``.

The three pieces are independent Optuna objects, so they meet here: the trials this process is
running (their window, reservation and cost so far, kept fresh by every report), and one
:class:`~hpsearch_budget.budget.TrialForecaster` per (ledger, study) that learns from trials
finished here at once and from other workers' trials through the ledger, at most every
``SYNC_S`` seconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from hpsearch_budget.budget import Budget, Cost, TrialForecaster

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

#: How often (s) a process reads other workers' finished trials from the ledger; doubled
#: after every read that finds none (a study this process runs alone), up to SYNC_MAX_S.
SYNC_S = 5.0
SYNC_MAX_S = 60.0
#: How far (s) the clocks of machines sharing a ledger may disagree (windows' start times).
SKEW_S = 60.0


@dataclass
class LiveTrial:
    """A trial running in this process, as the budget sees it."""

    study: str
    number: int
    window_id: int
    reserved: Cost = field(default_factory=Cost)
    cost: Cost = field(default_factory=Cost)  # at the last checkpoint
    steps_done: int = 0  # last reported step + 1
    base: tuple[Cost, int] | None = None  # (cost, steps_done) at the first report
    prune_reason: str | None = None
    #: Writes the trial's figures not yet in its ledger row (``metered`` sets it); the pruner
    #: calls it from the trial's own thread when the study comes near its limit.
    flush: Callable[[], object] | None = field(default=None, repr=False, compare=False)
    #: Its meter follows the wall clock (``Meter.wall_clock``): the pruner may then skip its
    #: figures for a moment far from the limit (``BudgetPruner``, ``far_until``).
    wall_clock: bool = False
    #: Until when (time.monotonic()) the pruner takes this trial's study as far from its limit.
    far_until: float = -math.inf

    @property
    def reserved_left(self) -> Cost:
        """The part of the reservation not yet spent (what the ledger counts as committed)."""
        return (self.reserved - self.cost).clip()


_lock = threading.Lock()
_live: dict[tuple[str, int], LiveTrial] = {}


def register(trial: LiveTrial) -> None:
    with _lock:
        _live[(trial.study, trial.number)] = trial


def unregister(trial: LiveTrial) -> None:
    with _lock:
        _live.pop((trial.study, trial.number), None)


def live_trial(study: str, number: int) -> LiveTrial | None:
    """The live state of a trial running in this process, or None (another process's)."""
    return _live.get((study, number))


def live_trials(study: str) -> list[LiveTrial]:
    """The trials of ``study`` running in this process."""
    with _lock:
        return [t for (s, _), t in _live.items() if s == study]


class StudyState:
    """What this process has learned about one study's trial costs, and how near its limit
    the study was when the pruner last looked (:attr:`near`)."""

    def __init__(self, ledger: Ledger, study: str, max_steps: int | None) -> None:
        self.ledger = ledger
        self.study = study
        self.forecaster = TrialForecaster(max_steps=max_steps)
        #: Set by :class:`~hpsearch_budget.optuna.BudgetPruner` at every report: spent +
        #: committed + this process's pressure reached its ``near_fraction`` of a limit. While
        #: it is set, ``metered`` writes every report to the ledger (no checkpoint throttling).
        self.near = False
        self._seen: set[int] = set()
        self._synced_at = -math.inf
        self._since: datetime | None = None  # where the next sync starts reading
        self._every_s = SYNC_S
        self._lock = threading.Lock()

    def observe(self, window_id: int, cost: Cost, steps: int, status: str) -> None:
        """A trial of this process finished: learn from it now."""
        with self._lock:
            if window_id not in self._seen:
                self._seen.add(window_id)
                self.forecaster.observe(cost, steps, complete=status == "complete")

    def sync(self, force: bool = False) -> None:
        """Learn from trials other workers finished (rate-limited: one ledger read per SYNC_S,
        backing off to SYNC_MAX_S while reads find none, e.g. in a single-worker study).

        Incremental: after the first read only windows opened since the oldest one still
        running at the previous read (less ``SKEW_S`` for other machines' clocks) are read, so
        the cost does not grow with the study. A window another machine opened with a clock
        more than ``SKEW_S`` behind may be missed: the forecast learns from one trial fewer
        (the ledger's reaping already assumes clocks that agree far better than that).
        """
        now = time.monotonic()
        if not force and now - self._synced_at < self._every_s:
            return
        self._synced_at = now
        learned = self.forecaster.n_observed
        self._learn()
        others = self.forecaster.n_observed - learned
        self._every_s = SYNC_S if others else min(SYNC_MAX_S, 2 * self._every_s)

    def _learn(self) -> None:
        from hpsearch_budget.ledger import Scope

        scope = None if self._since is None else Scope(since=self._since)
        rows = self.ledger.entries(study=self.study, scope=scope)
        if rows.empty:
            return
        finished = ~rows["status"].isin(["running"])
        starts = rows.loc[~finished, "started_at"]
        horizon = starts.min() if not starts.empty else rows["started_at"].max()
        if not pd.isna(horizon):
            since = pd.Timestamp(horizon).to_pydatetime(warn=False)
            self._since = since - timedelta(seconds=SKEW_S)
        # Tuning trials only: idle rows (what the meter measured between trials) and a final
        # training or seed rerun of the study count in spent, but are no typical trial (a final
        # training runs longer, and would make every new trial reserve too much).
        trials = rows["phase"] == "tuning"
        done = rows[finished & trials & ~rows["id"].isin(list(self._seen))]
        for row in done.sort_values("id").itertuples(index=False):
            self.observe(int(row.id), _row_cost(row), _row_steps(row), str(row.status))


def _num(value: Any) -> float:
    """A ledger cell as a float; missing (None, NaN, pandas NA) is 0."""
    return 0.0 if value is None or pd.isna(value) else float(value)


def _row_cost(row: Any) -> Cost:
    return Cost(_num(row.energy_j), _num(row.co2e_g), _num(row.usd), _num(row.gpu_s))


def _row_steps(row: Any) -> int:
    step = row.step
    return 0 if step is None or pd.isna(step) else int(step) + 1


def row_cost(row: Any) -> Cost:
    """A ledger row's cost so far (its last checkpoint)."""
    return _row_cost(row)


def row_reserved(row: Any) -> Cost:
    """A ledger row's reservation."""
    return Cost(
        _num(row.reserved_energy_j),
        _num(row.reserved_co2e_g),
        _num(row.reserved_usd),
        _num(row.reserved_gpu_s),
    )


def row_steps(row: Any) -> int:
    """A ledger row's steps done (last checkpointed step + 1)."""
    return _row_steps(row)


_states: dict[tuple[str, str], StudyState] = {}


def study_state(ledger: Ledger, study: str, max_steps: int | None = None) -> StudyState:
    """The one :class:`StudyState` of this process for ``study`` in ``ledger``."""
    key = (ledger.url, study)
    with _lock:
        state = _states.get(key)
        if state is None:
            state = _states[key] = StudyState(ledger, study, max_steps)
        elif max_steps is not None and state.forecaster.max_steps is None:
            state.forecaster.max_steps = max_steps
    return state


def limits_for(
    study: str,
    budget: Budget | None,
    policy: Any,
    project: str | None = None,
    user: str | None = None,
) -> list[tuple[Any, Cost]]:
    """The (scope, limit) pairs a trial of ``study`` must fit: the study's budget first (none:
    unlimited), then the lab policy's caps unless its ``on_exceed`` is ``"warn"``."""
    return [(s, c) for s, c, _ in named_limits(study, budget, policy, project, user)]


def named_limits(
    study: str,
    budget: Budget | None,
    policy: Any,
    project: str | None = None,
    user: str | None = None,
) -> list[tuple[Any, Cost, str]]:
    """:func:`limits_for` with each limit's name (``"project 'nlp' monthly CO2e cap"``)."""
    from hpsearch_budget.policy import resolve_identity
    from hpsearch_budget.policy._sweep import enforced_limits

    project, user = resolve_identity(study, project, user)
    cost = budget.as_cost() if budget is not None else None
    return enforced_limits(study, cost, policy, project, user)

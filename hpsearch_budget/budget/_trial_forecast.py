"""Per-trial cost forecasts: what a running trial will still spend, what a new one will cost.

Plain numbers in, :class:`Cost` out, so the Optuna and the Ray integrations share one model.
Steps are in the user's own unit (epochs, iterations) and counted from 0, as Optuna's pruners
assume: ``steps_done`` is the last reported step + 1 and ``max_steps`` the ``steps_done`` of a
complete trial (Hyperband's ``max_resource``).

Example:

    >>> from hpsearch_budget.budget import Cost, TrialForecaster, forecast_remaining
    >>> forecast_remaining(Cost(energy_j=30.0), steps_done=3, total_steps=10)
    Cost(energy_j=70.0, co2e_g=0.0, usd=0.0, gpu_s=0.0)
    >>> f = TrialForecaster()
    >>> f.observe(Cost(energy_j=100.0), steps=10)
    >>> f.observe(Cost(energy_j=120.0), steps=10)
    >>> f.expected_steps()
    10.0
    >>> f.remaining(Cost(energy_j=20.0), steps_done=2).energy_j  # own rate: 10 J/step x 8 left
    80.0
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpsearch_budget.budget._cost import Cost
from hpsearch_budget.errors import HpauditInputError

_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")


def forecast_remaining(spent: Cost, steps_done: int, total_steps: float | None) -> Cost:
    """A running trial's remaining cost at its own rate so far.

    ``spent / steps_done x (total_steps - steps_done)``; ``Cost()`` when nothing has been
    reported yet or the total number of steps is unknown (nothing to extrapolate from).
    """
    if steps_done <= 0 or total_steps is None or not math.isfinite(total_steps):
        return Cost()
    left = max(0.0, float(total_steps) - steps_done)
    return spent.scale(left / steps_done).clip()


def _lerp(v: list[float], q: float) -> float:
    """``numpy.quantile``'s linear interpolation on sorted values, in plain Python."""
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi, t = min(lo + 1, len(v) - 1), pos - lo
    a, b = v[lo], v[hi]
    # numpy's _lerp: from the nearer end, so the result stays within [a, b]
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t


class _SortedCosts:
    """The costs of a window of trials, each unit kept sorted as they come and go, so that a
    quantile is an index (it is asked at every trial start; sorting the window each time was
    ~0.4 ms of a trial's overhead)."""

    __slots__ = ("_columns",)

    def __init__(self) -> None:
        self._columns: tuple[list[float], ...] = tuple([] for _ in _FIELDS)

    def __len__(self) -> int:
        return len(self._columns[0])

    def add(self, cost: Cost) -> None:
        for column, value in zip(self._columns, _values(cost), strict=True):
            bisect.insort(column, value)

    def remove(self, cost: Cost) -> None:
        for column, value in zip(self._columns, _values(cost), strict=True):
            del column[bisect.bisect_left(column, value)]

    def quantile(self, q: float) -> Cost:
        """Componentwise (each unit of a budget is forecast on its own)."""
        return Cost(*(_lerp(column, q) for column in self._columns))


def _values(cost: Cost) -> tuple[float, float, float, float]:
    return (cost.energy_j, cost.co2e_g, cost.usd, cost.gpu_s)


@dataclass(frozen=True, slots=True)
class _Observed:
    cost: Cost
    steps: int | None
    complete: bool


class TrialForecaster:
    """Learns the cost of trials from finished ones and forecasts new and running trials.

    Args:
        max_steps: steps of a complete trial; ``None`` learns it from complete trials (median).
        prior: cost of a trial before any has finished; ``None`` means unknown (``Cost()``),
            so the first trials start without a reservation and are held to the budget only by
            the per-checkpoint check.
        quantile: which quantile of complete trials' totals a new trial is forecast at. The
            default 0.75 reserves a little more than typical, so few trials outgrow their
            reservation.
        window: how many recent trials to learn from (cost drifts as the sampler moves).
    """

    def __init__(
        self,
        *,
        max_steps: int | None = None,
        prior: Cost | None = None,
        quantile: float = 0.75,
        window: int = 64,
    ) -> None:
        if max_steps is not None and not max_steps > 0:
            raise HpauditInputError(f"max_steps must be a positive integer, got {max_steps}")
        if not 0.0 <= quantile <= 1.0:
            raise HpauditInputError(f"quantile must be in [0, 1], got {quantile}")
        if window < 1:
            raise HpauditInputError(f"window must be >= 1, got {window}")
        self.max_steps = max_steps
        self.prior = prior
        self.quantile = quantile
        self._seen: deque[_Observed] = deque(maxlen=window)
        self._totals = _SortedCosts()  # complete trials in the window
        self._rates = _SortedCosts()  # cost per step of trials in the window that reported
        self._steps: list[int] = []  # steps of complete trials in the window, sorted
        self._n = 0
        # Summaries are asked several times per trial and per report (reservation, pruner,
        # callback) but change only when a trial is observed or a setting changes.
        self._memo: dict[str, Any] = {}
        self._memo_key: tuple[int, int | None, Cost | None, float] = (-1, None, None, 0.0)

    def _cached(self, name: str, compute: Callable[[], Any]) -> Any:
        key = (self._n, self.max_steps, self.prior, self.quantile)
        if key != self._memo_key:
            self._memo, self._memo_key = {}, key
        if name not in self._memo:
            self._memo[name] = compute()
        return self._memo[name]

    @property
    def n_observed(self) -> int:
        """Finished trials observed so far (including those that fell out of the window)."""
        return self._n

    def observe(self, cost: Cost, steps: int | None = None, *, complete: bool = True) -> None:
        """Learn from a finished trial. Pruned and failed ones (``complete=False``) stopped
        early, so they teach the cost per step but not the length or total of a trial.
        A cost that is not finite (a broken meter) teaches nothing and is left out."""
        if not all(math.isfinite(v) for v in _values(cost)):
            return
        if len(self._seen) == self._seen.maxlen:
            self._forget(self._seen[0])
        seen = _Observed(cost, steps if steps and steps > 0 else None, complete)
        self._seen.append(seen)
        if seen.complete:
            self._totals.add(seen.cost)
        if seen.steps is not None:
            self._rates.add(seen.cost.scale(1.0 / seen.steps))
            if seen.complete:
                bisect.insort(self._steps, seen.steps)
        self._n += 1

    def _forget(self, old: _Observed) -> None:
        """Take a trial leaving the window out of the sorted summaries."""
        if old.complete:
            self._totals.remove(old.cost)
        if old.steps is not None:
            self._rates.remove(old.cost.scale(1.0 / old.steps))
            if old.complete:
                del self._steps[bisect.bisect_left(self._steps, old.steps)]

    def expected_steps(self) -> float | None:
        """Steps of a complete trial: ``max_steps`` if given, else the median learned."""
        if self.max_steps is not None:
            return float(self.max_steps)

        def compute() -> float | None:
            return _lerp([float(x) for x in self._steps], 0.5) if self._steps else None

        return self._cached("steps", compute)  # type: ignore[no-any-return]

    def per_step(self) -> Cost | None:
        """Median cost of one step over observed trials that reported steps."""

        def compute() -> Cost | None:
            return self._rates.quantile(0.5) if len(self._rates) else None

        return self._cached("per_step", compute)  # type: ignore[no-any-return]

    def new_trial(self) -> Cost:
        """Forecast total cost of a trial that has not started yet."""

        def compute() -> Cost:
            if len(self._totals):
                return self._totals.quantile(self.quantile)
            rate, steps = self.per_step(), self.expected_steps()
            if rate is not None and steps is not None:
                return rate.scale(steps)
            return self.prior if self.prior is not None else Cost()

        return self._cached("new_trial", compute)  # type: ignore[no-any-return]

    def remaining(
        self, spent: Cost, steps_done: int, *, base: tuple[Cost, int] | None = None
    ) -> Cost:
        """Forecast cost still to come of a running trial that has spent ``spent``.

        ``base``: the trial's (cost, steps_done) at its first checkpoint. The rate is then
        measured from there, which leaves out start-up costs (imports, data loading, the
        sampler) that would inflate a per-step rate; until a second checkpoint the learned
        per-step cost is used, or nothing is forecast.
        """
        steps = self.expected_steps()
        if steps_done > 0 and steps is not None:
            if base is None:
                return forecast_remaining(spent, steps_done, steps)
            base_cost, base_steps = base
            if steps_done > base_steps:
                rate = (spent - base_cost).clip().scale(1.0 / (steps_done - base_steps))
                return rate.scale(max(0.0, steps - steps_done))
            learned = self.per_step()
            return learned.scale(max(0.0, steps - steps_done)) if learned else Cost()
        return (self.new_trial() - spent).clip()

"""``CostAwareASHAScheduler``: asynchronous successive halving for Ray Tune, cost-aware.

The same rule as :class:`hpsearch_budget.optuna.CostAwarePruner` (see
:func:`hpsearch_budget.optuna.promote_at_rung`): at each rung (``min_t x reduction_factor**k``
of ``time_attr``) a trial goes on if it ranks in the best ``1 / reduction_factor`` of the trials
that reached the rung, a fraction that shrinks for trials costlier per step than the median and
grows for cheaper ones. A trial's cost is read from its results (``energy_j`` by default, which
:func:`hpsearch_budget.ray.metered` adds to every result, cumulative).

Wrap it in :class:`~hpsearch_budget.ray.BudgetScheduler` to also keep the sweep in a budget.

Example:

    >>> from hpsearch_budget.ray import CostAwareASHAScheduler
    >>> sched = CostAwareASHAScheduler(metric="acc", mode="max", max_t=9, min_t=1)
    >>> sched.rungs
    [1, 3]
    >>> # tune.Tuner(trainable, tune_config=tune.TuneConfig(scheduler=sched)).fit()
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.optuna._cost_aware_rule import check_cost_exponent, promote_at_rung, rungs


class CostAwareASHAScheduler(FIFOScheduler):
    """Ray Tune scheduler: ASHA whose promotion favours trials that are cheap to continue.

    Args:
        time_attr: the result key that counts progress (e.g. ``training_iteration``).
        metric, mode: the objective and ``"min"`` / ``"max"`` (or set by ``TuneConfig``).
        max_t: progress of a complete trial; stopped there.
        min_t: progress at the first rung.
        reduction_factor: keep about ``1 / reduction_factor`` at each rung.
        cost_exponent: how strongly per-step cost tightens promotion (0 = plain ASHA).
        cost_key: cumulative cost in each result (``energy_j``, ``co2e_g``, ``usd``).
    """

    def __init__(
        self,
        *,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: int = 100,
        min_t: int = 1,
        reduction_factor: int = 3,
        cost_exponent: float = 0.5,
        cost_key: str = "energy_j",
    ) -> None:
        super().__init__()
        if mode not in (None, "min", "max"):
            raise HpauditInputError(f"mode must be 'min' or 'max', got {mode!r}")
        self.rungs = rungs(min_t, max_t, reduction_factor)
        self._time_attr = time_attr
        self._metric = metric
        self._mode = mode
        self._max_t = max_t
        self._rf = reduction_factor
        self._cost_exponent = check_cost_exponent(cost_exponent)
        self._cost_key = cost_key
        # rung -> trial_id -> (value, cost per unit of time_attr or None)
        self._recorded: dict[int, dict[str, tuple[float, float | None]]] = {
            r: {} for r in self.rungs
        }
        self.num_stopped = 0

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        if metric:
            self._metric = metric
        if mode:
            self._mode = mode
        return True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return self.decide(trial.trial_id, result)

    def decide(self, trial_id: str, result: dict[str, Any]) -> str:
        """CONTINUE or STOP for one result of one trial (the logic, without Ray's controller)."""
        if self._metric is None or self._mode is None:
            raise HpauditInputError(
                "CostAwareASHAScheduler needs metric= and mode= (here or in tune.TuneConfig)"
            )
        if self._time_attr not in result or self._metric not in result:
            return TrialScheduler.CONTINUE
        t = float(result[self._time_attr])
        if t >= self._max_t:
            self.num_stopped += 1
            return TrialScheduler.STOP
        if self._judge(trial_id, t, float(result[self._metric]), result.get(self._cost_key)):
            return TrialScheduler.CONTINUE
        self.num_stopped += 1
        return TrialScheduler.STOP

    def _judge(self, trial_id: str, t: float, value: float, cost: Any) -> bool:
        """Record a result at every rung ``t`` reaches for the first time (cumulative ``cost``);
        False if the trial should not go on from one of them."""
        rate = float(cost) / t if cost is not None and t > 0 and math.isfinite(cost) else None
        go_on = True
        for rung in self.rungs:
            if rung > t or trial_id in self._recorded[rung]:
                continue
            peers = self._recorded[rung]
            peers[trial_id] = (value, rate)
            rates = [r for _, r in peers.values() if r]
            go_on &= promote_at_rung(
                value,
                [v for v, _ in peers.values()],
                maximize=self._mode == "max",
                rate=rate,
                median_rate=float(np.median(rates)) if rates else None,
                reduction_factor=self._rf,
                cost_exponent=self._cost_exponent,
            )
        return go_on

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        # Its values at the rungs it passed stay as the bar for later trials. A result that
        # ended the trial (a stopper, stop criteria) never came to on_trial_result: record it.
        metric = self._metric
        if metric and self._mode and self._time_attr in result and metric in result:
            t, value = float(result[self._time_attr]), float(result[metric])
            self._judge(trial.trial_id, t, value, result.get(self._cost_key))

    def debug_string(self) -> str:
        sizes = ", ".join(f"{r}: {len(v)}" for r, v in self._recorded.items())
        return f"CostAwareASHA: stopped {self.num_stopped}; trials per rung {{{sizes}}}"

"""Cost-aware search for Optuna: spend a budget where accuracy is cheapest to buy.

Two parts that work alone or together, and with :class:`~hpsearch_budget.optuna.BudgetPruner`:

- :class:`CostAwareSampler`: TPE whose acquisition is divided by the predicted cost of a
  configuration, raised to a power that *cools* from ``alpha`` to 0 as the budget is used
  (CArBO: Lee et al., "Cost-aware Bayesian Optimization", 2020). Early on it prefers cheap
  configurations, late it is plain TPE. The cost model is learned from the trials themselves:
  a ridge regression of log cost per step on the (log-scaled) parameters.
- :class:`CostAwarePruner`: asynchronous successive halving whose promotion is cost-aware (see
  :func:`~hpsearch_budget.optuna.promote_at_rung`): an expensive trial must rank higher to go on.

Both read a trial's cost from a user attribute (``energy_kwh`` by default, which
``hpsearch_budget.optuna.metered`` sets when a trial ends; ``co2e_kg`` works too). A trial
``metered`` is still running in this process has no such attribute yet: the pruner reads its
cost so far from its last report instead. A trial without either is treated as of unknown
cost (neutral).

Example (the objective sets the cost attribute itself here; ``metered`` does it for you):

    >>> import optuna
    >>> from hpsearch_budget.budget import Budget
    >>> from hpsearch_budget.optuna import CostAwarePruner, CostAwareSampler
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> def objective(trial):
    ...     width = trial.suggest_int("width", 8, 512, log=True)
    ...     acc = 0.0
    ...     for step in range(9):
    ...         acc = 1.0 - 1.0 / (step + 2) - abs(width - 64) / 1000
    ...         trial.set_user_attr("energy_kwh", width * (step + 1) * 1e-4)
    ...         trial.report(acc, step)
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return acc
    >>> study = optuna.create_study(
    ...     direction="maximize",
    ...     sampler=CostAwareSampler(budget=Budget(energy_kwh=5.0), seed=0, n_startup_trials=5),
    ...     pruner=CostAwarePruner(min_resource=1, max_resource=9),
    ... )
    >>> study.optimize(objective, n_trials=20)
    >>> study.best_value > 0.8
    True
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import BasePruner
from optuna.samplers import TPESampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch_budget.budget import Budget
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.optuna import _state
from hpsearch_budget.optuna._cost_aware_rule import check_cost_exponent, promote_at_rung, rungs

_log = logging.getLogger(__name__)

# Which Budget limit a cost attribute is measured against.
_ATTR_LIMIT = {
    "energy_kwh": "energy_kwh",
    "co2e_kg": "co2e_kg",
    "usd": "usd",
    "gpu_hours": "gpu_hours",
}


def trial_cost(trial: FrozenTrial, cost_attr: str = "energy_kwh") -> float | None:
    """The cost a trial has spent so far (its ``cost_attr`` user attribute), or None."""
    value = trial.user_attrs.get(cost_attr)
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def trial_steps(trial: FrozenTrial) -> int:
    """Steps done: last reported step + 1, or 1 for a trial that reported nothing."""
    return max(trial.intermediate_values, default=0) + 1


def cost_rate(trial: FrozenTrial, cost_attr: str = "energy_kwh") -> float | None:
    """Cost per step of a trial so far (None when unknown or zero)."""
    cost = trial_cost(trial, cost_attr)
    if not cost:
        return None
    return cost / trial_steps(trial)


class CostModel:
    """Ridge regression of log cost-per-step on a trial's parameters.

    Log-scale parameters enter as their logarithm, categorical ones one-hot. Fitted per call on
    exactly the parameters being sampled, so it also serves independent (one-at-a-time) sampling.

    >>> m = CostModel({"w": FloatDistribution(1.0, 100.0, log=True)})
    >>> m.fit([{"w": 1.0}, {"w": 10.0}, {"w": 100.0}], [1.0, 10.0, 100.0])
    True
    >>> round(float(m.predict_log({"w": np.array([10.0])})[0]), 1)  # log(10)
    2.3
    """

    def __init__(self, space: dict[str, BaseDistribution], ridge: float = 1e-2) -> None:
        self.space = dict(sorted(space.items()))
        self.ridge = ridge
        self._coef: np.ndarray | None = None
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None

    def _features(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        feats: list[np.ndarray] = []
        for name, dist in self.space.items():
            col = np.asarray(columns[name], dtype=float)
            if isinstance(dist, CategoricalDistribution):
                idx = col.astype(int)
                feats.extend((idx == k).astype(float) for k in range(len(dist.choices)))
            elif isinstance(dist, FloatDistribution | IntDistribution) and dist.log:
                feats.append(np.log(np.maximum(col, 1e-300)))
            else:
                feats.append(col)
        return np.stack(feats, axis=1) if feats else np.zeros((0, 0))

    def fit(self, params: Sequence[dict[str, Any]], rates: Sequence[float]) -> bool:
        """Fit on external parameter values and positive per-step costs; False if too few."""
        if len(rates) < 3 or not self.space:
            self._coef = None
            return False
        cols = {
            n: np.array([d.to_internal_repr(p[n]) for p in params], dtype=float)
            for n, d in self.space.items()
        }
        x = self._features(cols)
        y = np.log(np.asarray(rates, dtype=float))
        self._mean, self._scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        xs = np.hstack([(x - self._mean) / self._scale, np.ones((len(y), 1))])
        reg = self.ridge * np.eye(xs.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not shrunk
        self._coef = np.linalg.solve(xs.T @ xs + reg, xs.T @ y)
        return True

    def predict_log(self, internal: dict[str, np.ndarray]) -> np.ndarray:
        """Predicted log cost per step for candidates in Optuna's internal representation."""
        if self._coef is None or self._mean is None or self._scale is None:
            n = len(next(iter(internal.values()))) if internal else 0
            return np.zeros(n)
        x = (self._features(internal) - self._mean) / self._scale
        return np.hstack([x, np.ones((x.shape[0], 1))]) @ self._coef


class CostAwareSampler(TPESampler):
    """TPE that divides its acquisition by predicted cost ** alpha, with cost cooling.

    Args:
        budget: the sweep's budget; with it, ``alpha`` cools linearly to 0 as the trials'
            summed ``cost_attr`` approaches the matching limit (CArBO's cost cooling). Without
            it ``alpha`` stays fixed.
        cost_attr: the trial user attribute holding the cost spent so far: ``energy_kwh``
            (default, set by ``metered``), ``co2e_kg`` (set by ``metered`` too), ``usd`` or
            ``gpu_hours`` (set them yourself: ``trial.set_user_attr``; a sampler that finds no
            finished trial with the attribute logs a warning and samples as plain TPE).
        alpha: weight of log cost against TPE's log density ratio at the start of the sweep.
        n_ei_candidates: candidates drawn per suggestion (more than TPE's 24: the cost term
            needs choice).
        **tpe_kwargs: passed to :class:`optuna.samplers.TPESampler` (``seed``,
            ``n_startup_trials``, ``multivariate`` (default True here), ...).
    """

    def __init__(
        self,
        *,
        budget: Budget | None = None,
        cost_attr: str = "energy_kwh",
        alpha: float = 1.0,
        n_ei_candidates: int = 64,
        **tpe_kwargs: Any,
    ) -> None:
        if alpha < 0 or not math.isfinite(alpha):
            raise HpauditInputError(f"alpha must be a finite number >= 0, got {alpha}")
        self._limit: float | None = None
        if budget is not None:
            field = _ATTR_LIMIT.get(cost_attr)
            limit = getattr(budget, field) if field else None
            if limit is None:
                raise HpauditInputError(
                    f"budget {budget.describe()} has no limit in the unit of cost_attr="
                    f"{cost_attr!r}: give the budget a {field or 'matching'} limit or change "
                    "cost_attr to one of " + ", ".join(_ATTR_LIMIT)
                )
            self._limit = float(limit)
        tpe_kwargs.setdefault("multivariate", True)
        super().__init__(n_ei_candidates=n_ei_candidates, **tpe_kwargs)
        self.cost_attr = cost_attr
        self.alpha = alpha
        # The study each thread is sampling for (n_jobs > 1: one sampler, several threads);
        # a dict, not threading.local, so that the sampler still pickles.
        self._studies: dict[int, Study] = {}
        self._warned_no_cost = False

    def cost_weight(self, study: Study) -> float:
        """The current exponent of cost: ``alpha x`` the fraction of the budget left."""
        if self._limit is None:
            return self.alpha
        trials = study._get_trials(deepcopy=False, use_cache=False)
        spent = sum(trial_cost(t, self.cost_attr) or 0.0 for t in trials)
        return self.alpha * max(0.0, 1.0 - spent / self._limit)

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # TPE's _sample calls _compute_acquisition_func without the study; keep it at hand.
        thread = threading.get_ident()
        self._studies[thread] = study
        try:
            return super()._sample(study, trial, search_space)
        finally:
            self._studies.pop(thread, None)

    def _compute_acquisition_func(
        self, samples: dict[str, np.ndarray], mpe_below: Any, mpe_above: Any
    ) -> np.ndarray:
        acq = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        study = self._studies.get(threading.get_ident())
        if study is None:
            return acq
        weight = self.cost_weight(study)
        if weight <= 0:
            return acq
        space = {n: d for n, d in _distributions(study).items() if n in samples}
        if set(space) != set(samples):
            return acq
        model = CostModel(space)
        params, rates = _observed_rates(study, space, self.cost_attr)
        if not rates:
            self._warn_no_cost()
        if not model.fit(params, rates):
            return acq
        return acq - weight * model.predict_log(samples)

    def _warn_no_cost(self) -> None:
        """Once: TPE is sampling after its startup trials, and no finished trial has a cost."""
        if not self._warned_no_cost:
            self._warned_no_cost = True
            _log.warning(
                "CostAwareSampler: no finished trial has the user attribute %r, so the cost "
                "term is off (plain TPE): metered() sets energy_kwh and co2e_kg; for another "
                "cost set it with trial.set_user_attr(%r, cost_so_far)",
                self.cost_attr,
                self.cost_attr,
            )


def _distributions(study: Study) -> dict[str, BaseDistribution]:
    dists: dict[str, BaseDistribution] = {}
    for t in study._get_trials(deepcopy=False, use_cache=True):
        dists.update(t.distributions)
    return dists


def _observed_rates(
    study: Study, space: dict[str, BaseDistribution], cost_attr: str
) -> tuple[list[dict[str, Any]], list[float]]:
    params, rates = [], []
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    for t in study._get_trials(deepcopy=False, states=states, use_cache=True):
        rate = cost_rate(t, cost_attr)
        if rate and space.keys() <= t.params.keys():
            params.append(t.params)
            rates.append(rate)
    return params, rates


def _rate_now(study: Study, trial: FrozenTrial, cost_attr: str) -> float | None:
    """Cost per step of a trial so far: its ``cost_attr`` attribute, or, for a trial ``metered``
    is running in this process (the attribute is set only when it ends), its last report's."""
    rate = cost_rate(trial, cost_attr)
    if rate is not None or cost_attr not in _ATTR_LIMIT:
        return rate
    live = _state.live_trial(study.study_name, trial.number)
    if live is None:
        return None
    cost = float(getattr(live.cost, cost_attr))
    return cost / trial_steps(trial) if math.isfinite(cost) and cost > 0 else None


class CostAwarePruner(BasePruner):
    """Asynchronous successive halving with cost-aware promotion, plus an optional budget pruner.

    At each rung (``min_resource x reduction_factor**k`` steps done, below ``max_resource``) a
    trial goes on if :func:`~hpsearch_budget.optuna.promote_at_rung` says so against every trial
    that reached the rung. Between rungs nothing is pruned, so a trial is judged only on steps
    it has actually trained (no rule fires at step 0 unless ``min_resource=1``). A trial that
    does not report every step is judged at its first report past a rung, against the other
    trials' values at their first reports past it.

    Args:
        min_resource: steps done at the first rung. Where the first epochs say little about the
            final score, start higher (e.g. 4 of 52 epochs).
        max_resource: steps of a complete trial.
        reduction_factor: keep about ``1 / reduction_factor`` of the trials at each rung.
        cost_exponent: how strongly per-step cost tightens promotion (0 = plain ASHA).
        cost_attr: user attribute with the trial's cost so far (see :class:`CostAwareSampler`).
        budget_pruner: consulted first at every step, e.g. ``BudgetPruner(...)``: a trial the
            budget cannot afford is pruned whatever its rank.
    """

    def __init__(
        self,
        *,
        min_resource: int = 1,
        max_resource: int,
        reduction_factor: int = 3,
        cost_exponent: float = 0.5,
        cost_attr: str = "energy_kwh",
        budget_pruner: BasePruner | None = None,
    ) -> None:
        self.rungs = set(rungs(min_resource, max_resource, reduction_factor))
        self.reduction_factor = reduction_factor
        self.cost_exponent = check_cost_exponent(cost_exponent)
        self.cost_attr = cost_attr
        self.budget_pruner = budget_pruner

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        if self.budget_pruner is not None and self.budget_pruner.prune(study, trial):
            return True
        step = trial.last_step
        if step is None:
            return False
        # The rungs this report is the first to reach: a trial reporting every k steps (or at
        # global step numbers) passes a rung without a report exactly there.
        before = max((s for s in trial.intermediate_values if s < step), default=-1)
        due = sorted(r for r in self.rungs if before + 1 < r <= step + 1)
        if not due:
            return False
        trials = study._get_trials(deepcopy=False, use_cache=False)
        rate = _rate_now(study, trial, self.cost_attr)
        for rung in due:
            peers, peer_rates = [], []
            for t in trials:
                value = _value_at_rung(t, rung)
                if value is None:
                    continue
                peers.append(value)
                peer_rate = _rate_now(study, t, self.cost_attr)
                if peer_rate:
                    peer_rates.append(peer_rate)
            median_rate = float(np.median(peer_rates)) if peer_rates else None
            if not promote_at_rung(
                float(trial.intermediate_values[step]),
                peers,
                maximize=study.direction == StudyDirection.MAXIMIZE,
                rate=rate,
                median_rate=median_rate,
                reduction_factor=self.reduction_factor,
                cost_exponent=self.cost_exponent,
            ):
                return True
        return False


def _value_at_rung(trial: FrozenTrial, rung: int) -> float | None:
    """A trial's value at its first report with at least ``rung`` steps done, or None."""
    values = trial.intermediate_values
    value = values.get(rung - 1)
    if value is None:
        later = [s for s in values if s >= rung - 1]
        value = values[min(later)] if later else None
    return None if value is None else float(value)


__all__ = [
    "CostAwarePruner",
    "CostAwareSampler",
    "CostModel",
    "cost_rate",
    "trial_cost",
    "trial_steps",
]

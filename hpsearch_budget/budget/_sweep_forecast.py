"""Forecast what a whole sweep will cost from its first finished trials, with an interval.

After a few trials of a sweep of ``n_total`` (random search, or any sampler whose trials cost
alike), the cost to finish is the remaining trials times the mean cost of a trial. The interval
is a bootstrap: each replicate resamples the finished trials (uncertainty of the mean), then
adds the spread of a sum of ``n_remaining`` independent trials (normal approximation of that
sum, so it is cheap for any ``n_total``). Running trials are charged what a trial costs on
average beyond what they have already spent.

With a :class:`~hpsearch_budget.budget.TrialCostModel` learned from earlier sweeps over the
same search space (``cost_model=``, with the finished trials' ``params=``), the mean cost of a
trial comes from the model instead: the finished trials only fix the sweep's scale, which a
few trials do far better than they fix a mean (see that module). Without earlier sweeps,
``TrialCostModel.from_sweep`` learns the model from the sweep's own finished trials: with the
search space (``space=``) it averages their cost over the whole space, not over the few
configurations that ran first. The interval then draws the uncertainty of the mean trial
(``TrialCostModel.log_mean_sd``: the sweep's scale, and for a model of the sweep's own trials
its shape as well) and the spread of the remaining trials' sum from the model.

An adaptive sampler (TPE, the default in Optuna) or a pruner that has learned moves a sweep:
its later trials cost differently from its first, random ones (on LCBench, TPE's trials after
its 10 random ones cost 0.7-0.9x as much). So the finished trials, in the order they started,
are first checked for a shift (:func:`cost_shifted`: the later half against the earlier,
Welch's t-test on log energy); when their cost has shifted, only the later half is the sample,
and the interval allows the rest of the sweep to drift as far again. Random search passes the
check and keeps every trial.

Plain numbers in, :class:`Cost` out: no Optuna or Ray types, so the report, the CLI and both
integrations share it.

Example:

    >>> from hpsearch_budget.budget import Cost, forecast_sweep
    >>> done = [Cost(energy_j=e, co2e_g=e / 9000) for e in (90e3, 110e3, 100e3, 95e3, 105e3)]
    >>> f = forecast_sweep(done, n_total=50)
    >>> round(f.total.energy_kwh, 2)  # 50 trials x 100 kJ
    1.39
    >>> f.low.energy_j < f.total.energy_j < f.high.energy_j
    True
    >>> f.n_remaining
    45
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch_budget.budget._cost import Cost
from hpsearch_budget.errors import HpauditInputError

if TYPE_CHECKING:
    from hpsearch_budget.budget._cost_model import Params, TrialCostModel

_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")
#: Fewest finished trials the shift check runs on (5 per half), and its significance level.
SHIFT_MIN_TRIALS, SHIFT_ALPHA = 10, 0.05
#: After a shift, the mean trial of the rest of the sweep may move by this many times the
#: shift (in logs, one sd): TPE keeps moving. On LCBench this lifts the 90 % interval's
#: coverage of TPE sweeps 30-50 % done from 32-38 % to 70-80 %
#: (experiments/results/forecast_adaptive.md).
DRIFT_SCALE = 1.0


@dataclass(frozen=True, slots=True)
class SweepForecast:
    """A sweep's forecast total cost, what is spent, what is left, and a central interval.

    ``total = spent + remaining``; ``low`` / ``high`` bound the total at ``level`` (e.g. 0.9:
    the 5th and 95th percentiles of the bootstrap). ``final`` is the forecast cost of the final
    training runs (median complete trial x ``n_final_runs``), ``None`` when not asked for.
    Every figure is an estimate.
    """

    total: Cost
    low: Cost
    high: Cost
    spent: Cost
    remaining: Cost
    n_done: int
    n_running: int
    n_total: int
    level: float
    final: Cost | None = None
    final_low: Cost | None = None
    final_high: Cost | None = None
    method: str = field(default="bootstrap mean x remaining trials")

    @property
    def n_remaining(self) -> int:
        return max(0, self.n_total - self.n_done - self.n_running)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every Cost as a dict of its unit-named fields."""

        def c(x: Cost | None) -> dict[str, float] | None:
            return None if x is None else {f: getattr(x, f) for f in _FIELDS}

        return {
            "estimated": True,
            "method": self.method,
            "level": self.level,
            "n_done": self.n_done,
            "n_running": self.n_running,
            "n_total": self.n_total,
            "n_remaining": self.n_remaining,
            "total": c(self.total),
            "low": c(self.low),
            "high": c(self.high),
            "spent": c(self.spent),
            "remaining": c(self.remaining),
            "final": c(self.final),
            "final_low": c(self.final_low),
            "final_high": c(self.final_high),
        }


def _matrix(costs: Sequence[Cost | float]) -> np.ndarray:
    rows = []
    for c in costs:
        if isinstance(c, Cost):
            rows.append([c.energy_j, c.co2e_g, c.usd, c.gpu_s])
        elif isinstance(c, numbers.Real) and not isinstance(c, bool):
            rows.append([float(c), 0.0, 0.0, 0.0])
        else:
            raise HpauditInputError(
                f"trial costs must be Cost objects or joules (numbers), got {c!r}"
            )
    arr = np.asarray(rows, dtype=float).reshape(-1, 4)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise HpauditInputError("trial costs must be finite and >= 0 (check the ledger rows)")
    return arr


def _cost(v: np.ndarray) -> Cost:
    return Cost(*(float(x) for x in v))


def cost_shifted(energy: Sequence[float] | np.ndarray) -> float | None:
    """The p-value of the later half of ``energy`` (finished trials, in the order they
    started) costing the same as the earlier half, when it is below :data:`SHIFT_ALPHA`; else
    None (no shift shown, or too few trials with energy to tell).

    Welch's t-test on log energy: trial costs are skewed (a few dear configurations), in logs
    they are near normal. On random-search sweeps of LCBench it fired on 2 of 330 forecasts;
    on TPE sweeps on 27-72 %, more as the sweep went on
    (experiments/results/forecast_adaptive.md).

    >>> cost_shifted([100.0, 120, 90, 110, 105, 95, 115, 100, 98, 102])  # no shift: None
    >>> p = cost_shifted([100.0, 120, 90, 110, 105, 40, 45, 50, 38, 42])
    >>> p is not None and p < 0.01
    True
    """
    from scipy import stats

    e = np.asarray(energy, dtype=float)
    e = e[np.isfinite(e) & (e > 0)]
    if len(e) < SHIFT_MIN_TRIALS:
        return None
    half = len(e) // 2
    early, late = np.log(e[:half]), np.log(e[half:])
    if np.ptp(early) == 0 and np.ptp(late) == 0:  # constant halves: the t-test is undefined
        return 0.0 if early[0] != late[0] else None
    p = float(stats.ttest_ind(early, late, equal_var=False).pvalue)
    return p if p < SHIFT_ALPHA else None


def forecast_sweep(
    finished: Sequence[Cost | float],
    n_total: int,
    *,
    running: Sequence[Cost | float] = (),
    complete: Sequence[Cost | float] | None = None,
    n_final_runs: int = 0,
    level: float = 0.9,
    n_boot: int = 2000,
    seed: int | None = 0,
    cost_model: TrialCostModel | None = None,
    params: Sequence[Params] | None = None,
    space: Sequence[Params] | None = None,
    shift_check: bool = True,
) -> SweepForecast:
    """Forecast the total cost of a sweep of ``n_total`` trials from its finished trials.

    Args:
        finished: cost of each finished trial (a :class:`Cost`, or joules as a float), in the
            order the trials started.
        n_total: trials the sweep will run in all (finished + running + not started).
        running: cost so far of each running trial.
        complete: costs of trials trained to the end, for the final-training forecast
            (default: ``finished``).
        n_final_runs: final trainings to forecast (e.g. 1 + number of seed reruns); 0 = none.
        level: coverage of the interval, in (0, 1).
        n_boot: bootstrap replicates.
        seed: of the bootstrap (None: not repeatable).
        cost_model: a model of trial cost against hyperparameters, learned from earlier sweeps
            over the same search space (or from this sweep's own trials,
            ``TrialCostModel.from_sweep``); needs ``params``. For sweeps whose trials all train
            to the end (the model knows full trainings).
        params: the hyperparameters of each ``finished`` trial, in the same order.
        space: parameter sets drawn from the sweep's search space, for the model's mean over
            it (None: the earlier sweeps' trials).
        shift_check: without a cost model, forecast from the later half of the finished
            trials when their cost has shifted from the earlier half's (:func:`cost_shifted`).
    """
    if not 0.0 < level < 1.0:
        raise HpauditInputError(f"level must be in (0, 1), e.g. 0.9; got {level}")
    if isinstance(n_final_runs, bool) or not isinstance(n_final_runs, int) or n_final_runs < 0:
        raise HpauditInputError(
            f"n_final_runs must be a whole number >= 0 (final trainings to forecast), got "
            f"{n_final_runs!r}"
        )
    done = _matrix(finished)
    run = _matrix(running)
    n_done, n_running = len(done), len(run)
    if n_done == 0:
        raise HpauditInputError("no finished trial to forecast from: wait for the first trial")
    if n_total < n_done + n_running:
        raise HpauditInputError(
            f"n_total={n_total} is fewer than the {n_done + n_running} trials already run; "
            "pass the sweep's planned number of trials"
        )
    rng = np.random.default_rng(seed)
    n_rem = n_total - n_done - n_running
    spent = done.sum(axis=0) + run.sum(axis=0)
    if cost_model is not None:
        if params is None or len(params) != n_done:
            raise HpauditInputError(
                "cost_model needs the params of every finished trial (params=, same order)"
            )
        remaining, rem_boot = _modelled(done, run, n_rem, cost_model, params, space, rng, n_boot)
        method = f"{cost_model.describe()} x remaining trials"
    else:
        sample, method = done, "bootstrap mean x remaining trials"
        shifted = cost_shifted(done[:, 0]) if shift_check else None
        drift = 0.0
        if shifted is not None:
            sample = done[n_done // 2 :]
            method = (
                f"bootstrap mean of the later {len(sample)} of {n_done} finished trials (their "
                f"cost shifted from the earlier ones', p={shifted:.2g}) x remaining trials"
            )
            # The trials left may drift as far again as the later half did from the earlier.
            drift = DRIFT_SCALE * abs(
                math.log(sample[:, 0].mean() / max(done[: n_done // 2, 0].mean(), 1e-300))
            )
        remaining, rem_boot = _bootstrapped(sample, run, n_rem, rng, n_boot, drift)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    final = final_lo = final_hi = None
    if n_final_runs > 0:
        full = _matrix(complete) if complete is not None else done
        if len(full):
            idx = rng.integers(0, len(full), (n_boot, len(full)))
            med_boot = _by_rows(lambda b: np.median(b, axis=1), full, idx)
            final = _cost(np.median(full, axis=0) * n_final_runs)
            final_lo = _cost(np.quantile(med_boot, lo_q, axis=0) * n_final_runs)
            final_hi = _cost(np.quantile(med_boot, hi_q, axis=0) * n_final_runs)
    return SweepForecast(
        total=_cost(spent + remaining),
        low=_cost(spent + np.quantile(rem_boot, lo_q, axis=0)),
        high=_cost(spent + np.quantile(rem_boot, hi_q, axis=0)),
        spent=_cost(spent),
        remaining=_cost(remaining),
        n_done=n_done,
        n_running=n_running,
        n_total=n_total,
        level=level,
        final=final,
        final_low=final_lo,
        final_high=final_hi,
        method=method,
    )


#: Bootstrap replicates are reduced this many values at a time: (2000 replicates x 6,000
#: trials x 4 units) at once took 1 GB, and 20,000 trials 2.7 GB.
_CHUNK_VALUES = 4_000_000


def _by_rows(
    reduce: Callable[[np.ndarray], np.ndarray], values: np.ndarray, idx: np.ndarray
) -> np.ndarray:
    """``reduce(values[idx])`` (rows of ``idx``: replicates), a few rows at a time."""
    rows = max(1, _CHUNK_VALUES // max(1, idx.shape[1] * values.shape[1]))
    return np.concatenate(
        [reduce(values[idx[i : i + rows]]) for i in range(0, len(idx), rows)], axis=0
    )


def _bootstrapped(
    done: np.ndarray,
    run: np.ndarray,
    n_rem: int,
    rng: np.random.Generator,
    n_boot: int,
    drift_sd: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Remaining cost (point, bootstrap replicates): the finished trials' mean per trial.

    ``drift_sd``: how far (in logs, one standard deviation) the mean trial may still move
    beyond what the trials show: a sweep whose cost has shifted may go on shifting."""
    n_done = len(done)
    idx = rng.integers(0, n_done, size=(n_boot, n_done))
    means = _by_rows(lambda b: b.mean(axis=1), done, idx)
    sds = _by_rows(lambda b: b.std(axis=1, ddof=1 if n_done > 1 else 0), done, idx)
    if drift_sd > 0.0:
        moved = np.exp(drift_sd * rng.standard_normal((n_boot, 1)))
        means, sds = means * moved, sds * moved
    z = rng.standard_normal((n_boot, 1))
    # Remaining new trials: n x mean + sqrt(n) x sd x z; running ones: mean beyond their spend.
    rem_boot = n_rem * means + math.sqrt(n_rem) * sds * z
    rem_boot += np.maximum(means[:, None, :] - run[None, :, :], 0.0).sum(axis=1)
    mean = done.mean(axis=0)
    remaining = n_rem * mean + np.maximum(mean - run, 0.0).sum(axis=0)
    return remaining, np.maximum(rem_boot, 0.0)


def _modelled(
    done: np.ndarray,
    run: np.ndarray,
    n_rem: int,
    model: TrialCostModel,
    params: Sequence[Params],
    space: Sequence[Params] | None,
    rng: np.random.Generator,
    n_boot: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Remaining cost (point, replicates) from the cost model: energy per trial from the
    model, the other units in the finished trials' ratio to energy."""
    energy = done[:, 0]
    if not np.all(energy > 0):
        raise HpauditInputError(
            "the cost model needs the energy of every finished trial (> 0); leave it out "
            "for sweeps with trials that recorded none"
        )
    per_j = done.sum(axis=0) / energy.sum()  # (1, g CO2e / J, USD / J, GPU s / J)
    mu, sd = model.mean_cost(params, energy, space)
    # The mean trial's uncertainty, in logs: the sweep's scale (the model's noise / sqrt(trials
    # seen)), and for a model of the sweep's own trials its shape as well.
    scale = np.exp(model.log_mean_sd(len(done), space) * rng.standard_normal(n_boot))
    mus, sds = mu * scale, sd * scale
    rem = n_rem * mus + math.sqrt(n_rem) * sds * rng.standard_normal(n_boot)
    rem += np.maximum(mus[:, None] - run[None, :, 0], 0.0).sum(axis=1)
    point = n_rem * mu + float(np.maximum(mu - run[:, 0], 0.0).sum())
    return point * per_j, np.maximum(rem, 0.0)[:, None] * per_j[None, :]


def forecast_sweep_from_entries(
    entries: Any,
    n_total: int,
    *,
    n_final_runs: int = 0,
    level: float = 0.9,
    cost_model: TrialCostModel | None = None,
    space: Sequence[Params] | None = None,
    shift_check: bool = True,
) -> SweepForecast:
    """:func:`forecast_sweep` from ``Ledger.entries(study=...)`` rows of the tuning phase, in
    the order their windows opened.

    ``cost_model`` (with the rows' own ``params``): see :func:`forecast_sweep`; every finished
    row must then be complete (the model knows full trainings)."""
    rows = entries[entries["phase"] == "tuning"] if "phase" in entries else entries

    def costs(frame: Any) -> list[Cost]:
        return [
            Cost(
                float(r.energy_j or 0), float(r.co2e_g or 0), float(r.usd or 0), float(r.gpu_s or 0)
            )
            for r in frame.itertuples(index=False)
        ]

    status = rows["status"]
    finished = rows[status != "running"]
    params = None
    if cost_model is not None:
        if not (finished["status"] == "complete").all():
            raise HpauditInputError(
                "the cost model forecasts sweeps whose trials all train to the end; this one "
                "has pruned, failed or killed trials (forecast it without cost_model)"
            )
        params = [p if isinstance(p, dict) else {} for p in finished["params"]]
    return forecast_sweep(
        costs(finished),
        n_total,
        running=costs(rows[status == "running"]),
        complete=costs(rows[status == "complete"]),
        n_final_runs=n_final_runs,
        level=level,
        cost_model=cost_model,
        params=params,
        space=space,
        shift_check=shift_check,
    )

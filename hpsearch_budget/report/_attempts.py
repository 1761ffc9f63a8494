"""A trial tried more than once is one trial: its attempts folded into one row.

Two sources hold several attempts of one trial: the ledger (a window per attempt of a Ray
trial retried or restored, or of an Optuna heartbeat retry, all under one ``trial_key``) and
an Optuna storage with ``RetryFailedTrialCallback``, where a retry is a trial of its own that
names the attempt it retries in the system attribute ``failed_trial``. Folded the same way,
the report counts a trial once whether its figures come from the ledger or from the trials'
user attributes: every attempt charged, the fate that of the last attempt.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hpsearch_budget.analysis import Sweep

#: The system attribute Optuna's ``RetryFailedTrialCallback`` sets on a retry: the number of
#: the first attempt (what ``hpsearch_budget.optuna.metered`` keys its ledger window by).
FAILED_TRIAL_ATTR = "failed_trial"
#: Key in ``Sweep.cache`` of an Optuna sweep's folded retries: {retry number: first attempt's}.
RETRIES_KEY = "optuna_retries"

#: Columns summed over the attempts: what each attempt cost (and the steps it ran).
_SUMMED = ("steps", "wall_s", "energy_j", "co2e_g", "usd", "gpu_s")
_RANK = {"measured": 0, "integrated": 1, "replayed": 2, "estimated": 3}


def fold_attempts(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    """One row per value of column ``key`` (which is dropped): the rows of one key, in order,
    are the attempts of one trial. The first attempt's number, params and start; the last's
    state and end, the last value any reported; costs and steps summed; the weakest energy
    source."""
    if not rows[key].duplicated().any():
        return rows.drop(columns=key)
    per = rows.groupby(key, sort=False)
    # first: the row's own, where first / last would skip a missing value of the attempt
    out = per.nth(0).set_index(key)
    last = per.nth(-1).set_index(key)
    out["state"] = last["state"]
    # The last value reported: an attempt that reported nothing (a trial restored at its last
    # step, or exploited by PBT there, only returns) keeps the one before it.
    out["value"] = per["value"].last()
    out["ended_at"] = last["ended_at"]
    for col in _SUMMED:
        if col in rows:
            out[col] = per[col].sum(min_count=1)
    out["energy_source"] = per["energy_source"].agg(weakest)
    return out.reset_index(drop=True)


def fold_retries(trials: pd.DataFrame, retried: Mapping[int, int]) -> pd.DataFrame:
    """An Optuna study's ``trials`` with each heartbeat retry folded into its first attempt;
    ``retried``: {retry's number: first attempt's number} (``FAILED_TRIAL_ATTR``)."""
    if not retried:
        return trials
    ordered = trials.sort_values("number", kind="stable")
    first = ordered["number"].map(lambda n: retried.get(int(n), int(n)))
    return fold_attempts(ordered.assign(_first=first), "_first")


def keep_retries(sweep: Sweep, retried: Mapping[int, int]) -> None:
    """Remember an Optuna sweep's folded retries for the ledger join, and say so: Optuna itself
    lists each attempt as a trial."""
    sweep.cache[RETRIES_KEY] = dict(retried)
    if retried:
        n = len(set(retried.values()))
        sweep.notes.append(
            f"{n} trial(s) retried after a worker died (Optuna heartbeat, "
            f"{len(retried)} retry trial(s)): each counted once, all its attempts' costs summed"
        )


def retried_numbers(cache: Mapping[str, object]) -> dict[float, float]:
    """A sweep's folded retries (``RETRIES_KEY`` in its ``cache``) as {retry: first attempt},
    in the float numbers of a column that may hold NaN (a ledger row of no trial)."""
    retried = cache.get(RETRIES_KEY)
    if not isinstance(retried, dict):
        return {}
    return {float(k): float(v) for k, v in retried.items()}


def weakest(s: pd.Series) -> str | None:
    """The least direct energy source among ``s`` (an estimate taints a measured sum)."""
    vals = [v for v in s if isinstance(v, str) and v in _RANK]
    return max(vals, key=_RANK.__getitem__) if vals else None

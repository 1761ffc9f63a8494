"""``draw_params``: parameter sets drawn from a study's search space, as random search would.

What :class:`~hpsearch_budget.budget.TrialCostModel` averages over to forecast the cost of
the trials a sweep has not run yet. The draws are Optuna's own (a
:class:`~optuna.samplers.RandomSampler` on a throwaway in-memory study), so log scales, steps
and categories are treated exactly as in the sweep.

Example:

    >>> from optuna.distributions import FloatDistribution, IntDistribution
    >>> space = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "layers": IntDistribution(1, 5)}
    >>> draws = draw_params(space, n=100, seed=0)
    >>> len(draws), all(1 <= d["layers"] <= 5 and 1e-4 <= d["lr"] <= 1e-1 for d in draws)
    (100, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from hpsearch_budget.errors import HpauditInputError


def draw_params(
    distributions: Mapping[str, BaseDistribution], n: int = 1000, seed: int | None = 0
) -> list[dict[str, Any]]:
    """``n`` parameter sets drawn at random from ``distributions`` (a trial's
    ``distributions``, or the union over a study's trials)."""
    if not distributions:
        raise HpauditInputError("no search space to draw from: the trials have no parameters")
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(before)
    return [dict(study.ask(dict(distributions)).params) for _ in range(n)]

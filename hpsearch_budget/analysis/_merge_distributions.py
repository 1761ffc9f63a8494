"""One distribution per hyperparameter, when a study recorded several for it.

Optuna lets a study change a parameter's range between trials (``suggest_float("drop", 0,
0.5)`` then ``(0, 0.9)``, with a warning). Its importance evaluators take each distinct
distribution for a separate condition ("regime"): PED-ANOVA then credits the parameter with
whatever separates the early trials from the late ones (a parameter with no effect ranked
second, 0.25), and fANOVA refuses the study. It is one parameter over one space: the union of
the ranges (or of the choices) covers every value drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def merge_distributions(dists: Iterable[BaseDistribution]) -> BaseDistribution | None:
    """The smallest distribution of the same kind covering all of ``dists``; None when they
    are of different kinds (the caller infers one from the values) or there are none.

    >>> merge_distributions([FloatDistribution(0, 0.5), FloatDistribution(0.1, 0.9)])
    FloatDistribution(high=0.9, log=False, low=0.0, step=None)
    >>> merge_distributions([CategoricalDistribution(["a"]), CategoricalDistribution(["b"])])
    CategoricalDistribution(choices=('a', 'b'))
    """
    distinct = list(dict.fromkeys(dists))  # distributions are hashable; keep the first order
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    if all(isinstance(d, CategoricalDistribution) for d in distinct):
        choices = [c for d in distinct for c in d.choices]  # type: ignore[attr-defined]
        return CategoricalDistribution(list(dict.fromkeys(choices)))
    for kind in (FloatDistribution, IntDistribution):
        if all(type(d) is kind for d in distinct):
            return _merged_range(kind, distinct)
    return None


def _merged_range(
    kind: type[FloatDistribution] | type[IntDistribution], dists: list[BaseDistribution]
) -> BaseDistribution:
    low = min(d.low for d in dists)  # type: ignore[attr-defined]
    high = max(d.high for d in dists)  # type: ignore[attr-defined]
    log = all(d.log for d in dists)  # type: ignore[attr-defined]
    steps = {d.step for d in dists}  # type: ignore[attr-defined]
    # A step survives only if every range shares it and starts on its grid; else any value.
    step = steps.pop() if len(steps) == 1 and not log else None
    if step is not None and any((d.low - low) % step for d in dists):  # type: ignore[attr-defined]
        step = None
    with warnings.catch_warnings():  # Optuna warns when it trims high onto the step grid
        warnings.simplefilter("ignore")
        if kind is IntDistribution:
            return IntDistribution(int(low), int(high), log=log, step=int(step or 1))
        return FloatDistribution(low, high, log=log, step=step)

"""Checks of what a metered objective returns, and of the study it runs in, before Optuna
records anything."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection

from hpsearch_budget.errors import HpauditInputError


class ObjectiveValueError(HpauditInputError):
    """The objective returned something Optuna cannot rank (None, NaN, wrong arity)."""


def check_directions(study: optuna.Study, energy_objective: bool) -> None:
    if not energy_objective:
        return
    directions = study.directions
    if len(directions) < 2 or directions[-1] != StudyDirection.MINIMIZE:
        got = [d.name.lower() for d in directions]
        raise HpauditInputError(
            f"energy_objective=True adds energy (kWh, minimised) as the last objective, but "
            f"study {study.study_name!r} has directions {got}; create it with "
            f"directions=[..., 'minimize']"
        )


def check_result(
    result: Any, study: optuna.Study, number: int, energy_objective: bool
) -> list[float]:
    """The objective's value(s) as floats, or a clear error before Optuna records garbage."""
    expected = len(study.directions) - (1 if energy_objective else 0)
    where = f"trial {number} of study {study.study_name!r}"
    if result is None:
        raise ObjectiveValueError(
            f"the objective returned None in {where}; return the metric to optimise (a float)"
        )
    many = isinstance(result, Sequence | np.ndarray) and not isinstance(result, str)
    values = list(result) if many else [result]
    if len(values) != expected:
        raise ObjectiveValueError(
            f"the objective returned {len(values)} value(s) in {where} but the study optimises "
            f"{expected}; return one value per direction"
            + (" (energy is appended for you)" if energy_objective else "")
        )
    out: list[float] = []
    for v in values:
        if not isinstance(v, Real):
            raise ObjectiveValueError(
                f"the objective returned {type(v).__name__} in {where}; return float(s)"
            )
        if math.isnan(float(v)):
            raise ObjectiveValueError(
                f"the objective returned NaN in {where}; the training diverged or the metric is "
                "undefined: return a finite value, or pass catch=(ObjectiveValueError,) to "
                "optimize() to record such trials as failed and go on"
            )
        out.append(float(v))
    return out

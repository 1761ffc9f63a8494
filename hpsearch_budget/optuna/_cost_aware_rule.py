"""The cost-aware promotion rule shared by the Optuna pruner and the Ray Tune scheduler.

Plain numbers in, a decision out (no Optuna or Ray types), so both integrations make the same
call. Successive halving keeps the best ``1 / reduction_factor`` of the trials that reached a
rung. Cost-aware promotion scales that fraction by how cheap the trial is to continue:

    keep_fraction = (1 / reduction_factor) x (median_rate / rate) ** cost_exponent

clipped to ``[1 / reduction_factor ** 2, 1]``. A trial that costs 4x the median per step must be
in the top 1/6 (with ``reduction_factor=3, cost_exponent=0.5``) to go on; one at a quarter of
the median continues if it is in the top 2/3. The best trial at a rung always goes on, whatever
it costs: a budget should buy accuracy, not only cheap trials.

Example:

    >>> from hpsearch_budget.optuna import promote_at_rung
    >>> peers = [80.0, 85.0, 90.0, 70.0, 60.0, 75.0]
    >>> promote_at_rung(85.0, peers, maximize=True, rate=1.0, median_rate=1.0)
    True
    >>> promote_at_rung(85.0, peers, maximize=True, rate=9.0, median_rate=1.0)  # too costly
    False
    >>> promote_at_rung(90.0, peers, maximize=True, rate=9.0, median_rate=1.0)  # best goes on
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpsearch_budget.errors import HpauditInputError


def check_cost_exponent(cost_exponent: float) -> float:
    """``cost_exponent`` as a float, or a one-line error (negative or NaN inverts the rule)."""
    value = float(cost_exponent)
    if not (math.isfinite(value) and value >= 0):
        raise HpauditInputError(
            f"cost_exponent must be a finite number >= 0 (0 = plain successive halving), "
            f"got {cost_exponent!r}"
        )
    return value


def rungs(min_resource: int, max_resource: int, reduction_factor: int) -> list[int]:
    """Steps done (1-based) at which promotion is decided: ``min_resource x rf**k < max``.

    >>> rungs(4, 52, 3)
    [4, 12, 36]
    """
    if min_resource < 1 or reduction_factor < 2 or max_resource < min_resource:
        raise HpauditInputError(
            "rungs need min_resource >= 1, reduction_factor >= 2 and max_resource >= min_resource"
            f" (got {min_resource}, {reduction_factor}, {max_resource})"
        )
    out, r = [], min_resource
    while r < max_resource:
        out.append(r)
        r *= reduction_factor
    return out


def keep_fraction(
    rate: float | None,
    median_rate: float | None,
    *,
    reduction_factor: float = 3.0,
    cost_exponent: float = 0.5,
) -> float:
    """Fraction of a rung's trials a trial of per-step cost ``rate`` must be in to go on."""
    base = 1.0 / reduction_factor
    if not rate or not median_rate or rate <= 0 or median_rate <= 0 or cost_exponent == 0:
        return base
    frac = base * (median_rate / rate) ** cost_exponent
    return min(1.0, max(base / reduction_factor, frac))


def promote_at_rung(
    value: float,
    peers: Sequence[float],
    *,
    maximize: bool,
    rate: float | None = None,
    median_rate: float | None = None,
    reduction_factor: float = 3.0,
    cost_exponent: float = 0.5,
) -> bool:
    """Whether a trial with ``value`` at a rung goes on, among ``peers`` (values at the rung).

    ``peers`` may include the trial itself; NaN values rank last. With fewer peers than
    ``reduction_factor`` the trial goes on (nothing to compare against yet).
    """
    if math.isnan(value):
        return False
    clean = [p for p in peers if not math.isnan(p)]
    if len(clean) < reduction_factor:
        return True
    sign = 1.0 if maximize else -1.0
    better = sum(1 for p in clean if sign * p > sign * value)
    if better == 0:
        return True
    frac = keep_fraction(
        rate, median_rate, reduction_factor=reduction_factor, cost_exponent=cost_exponent
    )
    n_keep = max(1, math.floor(len(clean) * frac))
    return better < n_keep

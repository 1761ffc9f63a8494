"""Input checks of the ledger's public methods: a one-line error for each bad argument."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._schema import FINISHED, PHASES
from hpsearch_budget.ledger._scope import Scope
from hpsearch_budget.meters import Measurement


def check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise HpauditInputError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > 512:
        raise HpauditInputError(f"{what} is longer than 512 characters; shorten it")


def check_count(value: object, what: str) -> None:
    """A whole number of rows, >= 1 (``bool`` is no number of rows)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HpauditInputError(f"{what} must be a whole number >= 1, got {value!r}")


def check_measurement(m: object) -> None:
    if not isinstance(m, Measurement):
        raise HpauditInputError(
            f"expected a hpsearch_budget.meters.Measurement, got {type(m).__name__}"
        )
    if not (math.isfinite(m.wall_s) and m.wall_s >= 0):
        raise HpauditInputError(f"measurement wall_s must be a number >= 0, got {m.wall_s}")
    for domain, joules in m.by_domain.items():
        if not (math.isfinite(joules) and joules >= 0):
            raise HpauditInputError(
                f"measurement energy for domain {domain!r} must be >= 0 J, got {joules}"
            )


def check_cost(cost: object, what: str, *, allow_inf: bool) -> None:
    if not isinstance(cost, Cost):
        raise HpauditInputError(f"{what} must be a Cost, got {type(cost).__name__}")
    for name in ("energy_j", "co2e_g", "usd", "gpu_s"):
        x = getattr(cost, name)
        ok = (x >= 0) and (allow_inf or math.isfinite(x))  # NaN fails both
        if not ok:
            bound = ">= 0 (inf = no limit)" if allow_inf else "a finite number >= 0"
            raise HpauditInputError(f"{what}.{name} must be {bound}, got {x}")


def check_limits(limits: Sequence[tuple[Scope, Cost]]) -> list[tuple[Scope, Cost]]:
    """``limits`` as try_reserve takes them, checked (a one-line error for a bad pair)."""
    checked: list[tuple[Scope, Cost]] = []
    for item in limits:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise HpauditInputError("limits must be a sequence of (Scope, Cost) pairs")
        scope, limit = item
        if not isinstance(scope, Scope):
            raise HpauditInputError(f"limits: expected a Scope, got {type(scope).__name__}")
        check_cost(limit, "limit", allow_inf=True)
        checked.append((scope, limit))
    return checked


def check_reserve(
    reserve: tuple[Cost, Sequence[tuple[Scope, Cost]]],
) -> tuple[Cost, list[tuple[Scope, Cost]]]:
    """:meth:`Ledger.open_window`'s ``reserve=(amount, limits)``, checked as try_reserve's."""
    if not (isinstance(reserve, tuple | list) and len(reserve) == 2):
        raise HpauditInputError("reserve must be an (amount, limits) pair, as try_reserve takes")
    amount, checked = reserve[0], check_limits(reserve[1])
    check_cost(amount, "amount", allow_inf=False)
    return amount, checked


def check_status(status: str) -> None:
    """A finalisation's status: one of the finished ones."""
    if status not in FINISHED:
        raise HpauditInputError(
            f"cannot finalise with status {status!r}; use one of {', '.join(FINISHED)}"
        )


def within(total: Cost, limit: Cost) -> bool:
    # A relative slack of 1e-9 absorbs float summation order; it is far below any real cost.
    return all(
        getattr(total, f) <= getattr(limit, f) * (1 + 1e-9) + 1e-12
        for f in ("energy_j", "co2e_g", "usd", "gpu_s")
    )


def check_window(
    phase: str, gpu_share: float, checkpoint_interval_s: float, devices: object
) -> None:
    """The options of :meth:`Ledger.open_window` besides its names."""
    if phase not in PHASES:
        raise HpauditInputError(f"unknown phase {phase!r}; use one of {', '.join(PHASES)}")
    if not (isinstance(gpu_share, int | float) and 0.0 < gpu_share <= 1.0):
        raise HpauditInputError(f"gpu_share must be in (0, 1], got {gpu_share!r}")
    if not (
        isinstance(checkpoint_interval_s, int | float)
        and math.isfinite(checkpoint_interval_s)
        and checkpoint_interval_s > 0
    ):
        raise HpauditInputError(
            f"checkpoint_interval_s must be a positive number of seconds, "
            f"got {checkpoint_interval_s!r}"
        )
    if isinstance(devices, str):
        raise HpauditInputError(
            f"devices must be a list of device names, got the string {devices!r}"
        )

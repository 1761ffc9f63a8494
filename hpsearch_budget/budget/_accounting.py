"""Accounting: what is left of a budget, read from the ledger and cached.

Every worker that reads the same ledger sees the same spent + committed. Reading it costs two
aggregate queries per limit, so :class:`Accounting` caches the figures for ``ttl_s`` seconds:
far from the limit a slightly stale figure changes no decision. Callers that are near a limit
ask with ``fresh=True`` (see :class:`hpsearch_budget.optuna.BudgetPruner`).

Example:

    >>> from hpsearch_budget.budget import Accounting, Cost
    >>> from hpsearch_budget.ledger import Ledger, Scope
    >>> import tempfile
    >>> ledger = Ledger(f"sqlite:///{tempfile.mkdtemp()}/ledger.db")
    >>> acc = Accounting(ledger, [(Scope(study="s"), Cost(energy_j=1000.0))])
    >>> acc.left().energy_j
    1000.0
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpsearch_budget.budget._cost import Cost
from hpsearch_budget.errors import HpauditInputError

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")


def _min(a: Cost, b: Cost) -> Cost:
    return Cost(*(min(getattr(a, f), getattr(b, f)) for f in _FIELDS))


def left_of(limit: Cost, used: Cost) -> Cost:
    """``limit - used`` componentwise; an unlimited (inf) component stays inf."""
    return Cost(
        *(
            math.inf if math.isinf(getattr(limit, f)) else getattr(limit, f) - getattr(used, f)
            for f in _FIELDS
        )
    )


def fits(amount: Cost, left: Cost) -> bool:
    """Whether ``amount`` fits in ``left`` in every unit (a tiny tolerance for float sums)."""
    return all(
        getattr(amount, f) <= getattr(left, f) + 1e-9 * max(1.0, abs(getattr(left, f)))
        for f in _FIELDS
    )


def require_ttl_s(ttl_s: object) -> float:
    """``ttl_s`` (how long a read of spent / committed is reused), checked: seconds >= 0."""
    if isinstance(ttl_s, bool) or not (
        isinstance(ttl_s, numbers.Real) and 0.0 <= float(ttl_s) < 1e6
    ):
        raise HpauditInputError(
            f"ttl_s must be a number of seconds from 0 (0 reads the ledger every time) below 1e6, "
            f"got {ttl_s!r}"
        )
    return float(ttl_s)


def used_fraction(used: Cost, limit: Cost) -> float:
    """Fraction of the tightest limited unit that ``used`` takes (0 when nothing is limited)."""
    fractions = [
        getattr(used, f) / getattr(limit, f)
        for f in _FIELDS
        if math.isfinite(getattr(limit, f)) and getattr(limit, f) > 0
    ]
    return max(fractions, default=0.0)


class Accounting:
    """Spent and committed cost against a set of ``(scope, limit)`` pairs, cached for ``ttl_s``.

    Args:
        ledger: the shared ledger every worker writes to.
        limits: ``(Scope, Cost)`` pairs; inf components are unlimited. The first pair is the
            study's own budget; policy caps (per project / user per month) follow.
        ttl_s: how long a read is reused. 0 reads the ledger every time.
    """

    def __init__(self, ledger: Ledger, limits: Sequence[tuple[Any, Cost]], *, ttl_s: float = 1.0):
        if not limits:
            raise ValueError("Accounting needs at least one (scope, limit) pair")
        self.ledger = ledger
        self.limits = list(limits)
        self.ttl_s = ttl_s
        self._at = -math.inf
        self._used: list[tuple[Cost, Cost]] = []  # (spent, committed) per limit

    @property
    def read_at(self) -> float:
        """``time.monotonic()`` of the last ledger read (-inf before the first)."""
        return self._at

    def invalidate(self) -> None:
        """Forget the cached figures: the next read goes to the ledger."""
        self._at = -math.inf

    def _read(self, fresh: bool) -> list[tuple[Cost, Cost]]:
        now = time.monotonic()
        if fresh or now - self._at > self.ttl_s:
            self._used = [
                (self.ledger.spent(scope), self.ledger.committed(scope)) for scope, _ in self.limits
            ]
            self._at = now
        return self._used

    def used_by_limit(self, fresh: bool = False) -> list[Cost]:
        """Spent + committed under each limit, in the order of ``limits``."""
        return [spent + committed for spent, committed in self._read(fresh)]

    def spent(self, fresh: bool = False) -> Cost:
        """Spent in the first limit's scope (the study): finished rows + last checkpoints."""
        return self._read(fresh)[0][0]

    def committed(self, fresh: bool = False) -> Cost:
        """Unspent reservations of running windows in the first limit's scope."""
        return self._read(fresh)[0][1]

    def left(self, fresh: bool = False) -> Cost:
        """What is left under every limit: the componentwise minimum of limit - spent -
        committed (negative once overspent, inf where nothing is limited)."""
        out = Cost(math.inf, math.inf, math.inf, math.inf)
        for (_, limit), (spent, committed) in zip(self.limits, self._read(fresh), strict=True):
            out = _min(out, left_of(limit, spent + committed))
        return out

    def left_after_release(self, fresh: bool = False) -> Cost:
        """What would be left if every running reservation were released: limit - spent."""
        out = Cost(math.inf, math.inf, math.inf, math.inf)
        for (_, limit), (spent, _c) in zip(self.limits, self._read(fresh), strict=True):
            out = _min(out, left_of(limit, spent))
        return out

    def used_fraction(self, fresh: bool = False) -> float:
        """Fraction of the tightest limit that spent + committed take."""
        return max(
            used_fraction(spent + committed, limit)
            for (_, limit), (spent, committed) in zip(self.limits, self._read(fresh), strict=True)
        )

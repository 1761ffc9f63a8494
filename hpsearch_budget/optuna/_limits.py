"""What :class:`BudgetCallback` and :class:`BudgetPruner` share: one budget, plus the lab's
policy caps, checked per study against a ledger.

Example:

    >>> import tempfile
    >>> from hpsearch_budget import Budget
    >>> from hpsearch_budget.optuna._limits import StudyLimits
    >>> limits = StudyLimits(
    ...     Budget(energy_kwh=1.0), f"sqlite:///{tempfile.mkdtemp()}/ledger.db", policy=False
    ... )
    >>> limits._binding("s", limits._accounting_for("s"), limits.budget.as_cost())
    (0, "study 's' budget")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.budget._accounting import Accounting, require_ttl_s
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.meters.base import Source, weakest
from hpsearch_budget.optuna import _state
from hpsearch_budget.policy._reload import current, follow_policy
from hpsearch_budget.policy._sweep import binding_limit, expired, limits_until, open_ledger

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.policy import Policy


def study_source(study: optuna.Study) -> Source | None:
    """The weakest ``energy_source`` among the study's trials (None: none recorded)."""
    found = {t.user_attrs.get("energy_source") for t in study.get_trials(deepcopy=False)}
    return weakest([Source(s) for s in found if s in set(Source)])


def spent_label(study: optuna.Study) -> str:
    """``" (estimated)"`` (or another source) for figures a study's trials spent, ``""`` when
    all were measured. Messages that quote what was spent carry it, as every figure shown
    says whether it is an estimate."""
    source = study_source(study)
    return "" if source in (None, Source.MEASURED) else f" ({source})"


def require_budget(budget: Any) -> Budget:
    """``budget``, checked: a :class:`~hpsearch_budget.Budget` or an input error."""
    if not isinstance(budget, Budget):
        raise HpauditInputError(
            f"budget must be a hpsearch_budget.Budget, got {type(budget).__name__}"
        )
    return budget


class NamedAccounting(Accounting):
    """An :class:`Accounting` that knows its limits' names, so that a message names the limit
    that binds among the very limits it was computed from (the policy may change after)."""

    def __init__(self, ledger: Ledger, named: list[tuple[Any, Cost, str]], *, ttl_s: float) -> None:
        super().__init__(ledger, [(s, c) for s, c, _ in named], ttl_s=ttl_s)
        self.names = [n for *_, n in named]


class StudyLimits:
    """The budget, the lab policy (its file followed while the sweep runs) and the ledger,
    with a cached :class:`NamedAccounting` per study. A base class: the callback and the
    pruner add their own decisions on top."""

    def __init__(
        self,
        budget: Budget,
        ledger: Ledger | str,
        *,
        policy: Any = None,
        project: str | None = None,
        user: str | None = None,
        ttl_s: float = 1.0,
    ) -> None:
        self.budget = require_budget(budget)
        # The lab's policy file is read here, so a malformed one fails before any trial; then
        # followed: an edit applies within a second (the last good version while it is broken).
        self._live_policy = follow_policy(policy)
        self.ledger = open_ledger(ledger, self.policy)
        self.project = project
        self.user = user
        self.ttl_s = require_ttl_s(ttl_s)
        self._accounting: dict[str, tuple[NamedAccounting, float, Policy | None]] = {}

    @property
    def policy(self) -> Policy | None:
        """The lab policy in force now (None: opted out)."""
        return current(self._live_policy)

    def _accounting_for(self, study: str) -> NamedAccounting:
        """The study's spent / committed figures against every limit, built once per study
        and again when the policy file was edited or the month of its monthly caps ended."""
        policy = self.policy
        cached = self._accounting.get(study)
        if cached is None or cached[2] is not policy or expired(cached[1]):
            named = _state.named_limits(study, self.budget, policy, self.project, self.user)
            acc = NamedAccounting(self.ledger, named, ttl_s=self.ttl_s)
            cached = acc, limits_until(named), policy
            self._accounting[study] = cached
        return cached[0]

    def _binding(self, study: str, acc: NamedAccounting, need: Cost) -> tuple[int, str]:
        """(index, name) of the limit that binds once ``need`` more is spent: the study's
        budget (index 0) or a policy cap."""
        limits = [c for _, c in acc.limits]
        return binding_limit(acc.names, limits, acc.used_by_limit(), need)

"""A lab policy as a running sweep applies it: discovery, named limits, ``on_exceed``.

Shared by the Optuna and Ray integrations (thin adapters), so both read the policy and word
their decisions the same way:

* :func:`resolve_policy`: ``policy=None`` discovers the lab's file (``hpaudit.toml``,
  ``[tool.hpaudit]`` in ``pyproject.toml`` or ``$HPAUDIT_POLICY``) when the sweep object is
  built, so a malformed file fails the sweep before any trial runs; ``policy=False`` opts out.
  The sweep then follows the file (:func:`follow_policy`): an edit applies within a second.
* :func:`enforced_limits`: the study's budget first, then the policy's caps -- unless
  ``on_exceed = "warn"``, when the caps are only watched by a :class:`CapWarner`.
* :func:`binding_limit`: the name of the limit that refuses (``"project 'nlp' monthly CO2e
  cap"``), for prune and stop messages.
* :func:`open_ledger`: a ledger charged with the policy's defaults (region, PUE, price) when
  the caller gave no carbon model of its own.

Example:

    >>> from hpsearch_budget.policy import parse_policy
    >>> from hpsearch_budget.policy._sweep import enforced_limits
    >>> p = parse_policy('on_exceed = "stop"\\n[caps.project]\\nco2e_kg = 5')
    >>> [name for _, _, name in enforced_limits("mnist", None, p, "vision", "ana")]
    ["study 'mnist' budget", "project 'vision' monthly CO2e cap"]
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.policy._enforce import _fmt, as_utc, in_cap_units
from hpsearch_budget.policy._model import Policy
from hpsearch_budget.policy._reload import LivePolicy, current, follow_policy

if TYPE_CHECKING:
    from hpsearch_budget.carbon import CarbonModel
    from hpsearch_budget.ledger import Ledger, Scope

logger = logging.getLogger("hpsearch_budget.policy")

_INF = Cost(math.inf, math.inf, math.inf, math.inf)
_FIELDS = ("energy_j", "co2e_g", "usd", "gpu_s")

NamedLimit = tuple["Scope", Cost, str]


def resolve_policy(policy: Any) -> Policy | None:
    """The policy a sweep enforces: ``False`` -> None (opted out); ``None`` -> the lab's file
    found by :func:`~hpsearch_budget.policy.load_policy` (the empty policy when there is none);
    a :class:`Policy` or a path -> that policy. A bad file raises ``InvalidPolicyError``.
    The version in force now: a running sweep follows the file with :func:`follow_policy`."""
    return current(follow_policy(policy))


def enforces_caps(policy: Policy | None) -> bool:
    """Whether the policy has caps that stop or prune trials (not ``on_exceed = "warn"``)."""
    return policy is not None and policy.on_exceed != "warn" and not policy.caps.is_empty()


def enforced_limits(
    study: str,
    budget_cost: Cost | None,
    policy: Policy | None,
    project: str | None = None,
    user: str | None = None,
) -> list[NamedLimit]:
    """``(scope, limit, name)`` a trial must fit: the study's budget (unlimited when None)
    first, then the policy's caps unless ``on_exceed = "warn"`` (those are only logged)."""
    from hpsearch_budget.ledger import Scope

    first = (Scope(study=study), budget_cost if budget_cost is not None else _INF)
    out: list[NamedLimit] = [(*first, f"study '{study}' budget")]
    if enforces_caps(policy):
        assert policy is not None
        out.extend(policy.limits_for(study, project, user))
    return out


def limits_until(named: Sequence[NamedLimit]) -> float:
    """When the calendar month of the monthly caps among ``named`` ends (Unix seconds; inf
    when none is monthly): a sweep still running then must look its limits up again."""
    ends = [scope.until.timestamp() for scope, _, _ in named if scope.until is not None]
    return min(ends, default=math.inf)


def expired(until: float) -> bool:
    """Whether the month that :func:`limits_until` returned ``until`` for has ended."""
    return until != math.inf and as_utc().timestamp() >= until


def binding_limit(
    names: Sequence[str],
    limits: Sequence[Cost],
    used: Sequence[Cost],
    need: Cost = Cost(),
) -> tuple[int, str]:
    """The limit that binds once ``need`` is added to ``used`` (spent + committed per limit):
    the one most over its size, else the nearest to exhaustion. Returns (index, name)."""
    best, best_i = -math.inf, 0
    for i, (limit, u) in enumerate(zip(limits, used, strict=True)):
        total = u + need
        for f in _FIELDS:
            lim = getattr(limit, f)
            if not math.isfinite(lim):
                continue
            fraction = getattr(total, f) / lim if lim > 0 else math.inf
            if fraction > best:
                best, best_i = fraction, i
    return best_i, names[best_i]


def is_policy_cap(index: int) -> bool:
    """Limit 0 is the study's own budget; the rest are the policy's caps."""
    return index > 0


# -- carbon model ---------------------------------------------------------------------------


def policy_carbon(policy: Policy | None) -> CarbonModel | None:
    """The policy's carbon model, or None when it sets no region / intensity / PUE / price."""
    if policy is None:
        return None
    d = policy.defaults
    if d.region is None and d.g_per_kwh is None and d.pue is None and d.usd_per_kwh is None:
        return None
    return policy.carbon_model()


def open_ledger(ledger: Ledger | str | None, policy: Policy | None) -> Ledger:
    """A :class:`Ledger` that charges with the policy's defaults unless the caller chose a
    carbon model: a URL (or None) is opened with them; a Ledger built with the default model
    is reopened on the same database with them (the caller's object is left unchanged)."""
    from hpsearch_budget.ledger import Ledger, default_carbon

    carbon = policy_carbon(policy)
    if ledger is None or isinstance(ledger, str):
        return Ledger(ledger, carbon=carbon)
    if not isinstance(ledger, Ledger):
        raise HpauditInputError(
            f"ledger must be a Ledger, a database URL or None, got {type(ledger).__name__}"
        )
    if carbon is None or ledger.carbon != default_carbon():
        return ledger  # an explicit carbon model wins over the lab's defaults
    state = ledger.__getstate__()
    state["carbon"] = carbon
    charged = Ledger.__new__(Ledger)
    charged.__setstate__(state)
    return charged


# -- on_exceed = "stop" and "warn": per sweep, in this process ----------------------------

_lock = threading.Lock()
_stops: dict[tuple[str, str], str] = {}
# (ledger, study) -> the caps warned about, as (name, limit): an edit to a cap's value makes a
# new cap, warned about once more in every process's watchers (one per component) alike.
_warned: dict[tuple[str, str], set[tuple[str, Cost]]] = {}


def begin_sweep(ledger_url: str, study: str) -> None:
    """A new sweep of ``study``: forget an earlier stop and earlier warnings."""
    with _lock:
        _stops.pop((ledger_url, study), None)
        _warned.pop((ledger_url, study), None)


def request_stop(ledger_url: str, study: str, reason: str) -> None:
    """``on_exceed = "stop"``: no new trial starts; running trials stop at their next step."""
    with _lock:
        if (ledger_url, study) not in _stops:
            _stops[(ledger_url, study)] = reason
            logger.warning("hpaudit: stopping study %r: %s", study, reason)


def stop_reason(ledger_url: str, study: str) -> str | None:
    """Why the policy stopped ``study`` in this process, or None."""
    return _stops.get((ledger_url, study))


class CapWarner:
    """``on_exceed = "warn"``: logs once per cap per sweep when spent + committed passes it.

    Reads the ledger at most every ``ttl_s`` seconds, so calling :meth:`check` at every trial
    or report is cheap. Does nothing for a policy that enforces its caps (or has none). Given
    a :class:`LivePolicy`, it watches the caps of the version in force (the file, edited).
    """

    def __init__(
        self,
        ledger: Ledger,
        policy: Policy | LivePolicy | None,
        study: str,
        project: str | None = None,
        user: str | None = None,
        *,
        ttl_s: float = 1.0,
    ) -> None:
        self.ledger = ledger
        self.study = study
        self.ttl_s = ttl_s
        self._live = LivePolicy(policy) if isinstance(policy, Policy) else policy
        self._who = (project, user)
        self._policy: Policy | None = None  # the version self.caps come from
        self.caps: list[NamedLimit] = []
        self._until = math.inf  # then looked up again for the new month
        self._at = -math.inf
        self._follow()

    def mark(self, name: str | None) -> None:
        """``name`` was already reported (e.g. by the admission check)."""
        limit = next((limit for _, limit, n in self.caps if n == name), None)
        if name and limit is not None:
            with _lock:
                _warned.setdefault((self.ledger.url, self.study), set()).add((name, limit))

    def _follow(self) -> bool:
        """Look the caps up again when the policy file was edited or a new month began;
        whether they were."""
        policy = current(self._live)
        if policy is self._policy and not expired(self._until):
            return False
        if policy is self._policy:
            # A new month: its monthly caps are new caps, to be warned about once again.
            monthly = {(name, limit) for scope, limit, name in self.caps if scope.since}
            with _lock:
                _warned.get((self.ledger.url, self.study), set()).difference_update(monthly)
        self._policy = policy
        warn = policy is not None and policy.on_exceed == "warn"
        self.caps = policy.limits_for(self.study, *self._who) if warn and policy else []
        self._until = limits_until(self.caps)
        return True

    def check(self, fresh: bool = False) -> list[str]:
        """Log each cap passed for the first time; returns the messages logged now."""
        fresh = self._follow() or fresh  # new caps: read the ledger now
        now = time.monotonic()
        if not self.caps or (not fresh and now - self._at < self.ttl_s):
            return []
        self._at = now
        key = (self.ledger.url, self.study)
        logged = []
        for scope, limit, name in self.caps:
            if (name, limit) in _warned.get(key, set()):
                continue
            spent, committed = self.ledger.spent(scope), self.ledger.committed(scope)
            message = _overrun(self.study, name, limit, spent, committed)
            if message is None:
                continue
            with _lock:
                seen = _warned.setdefault(key, set())
                if (name, limit) in seen:
                    continue
                seen.add((name, limit))
            logger.warning(message)
            logged.append(message)
        return logged


def _overrun(study: str, name: str, limit: Cost, spent: Cost, committed: Cost) -> str | None:
    lim, sp, co = in_cap_units(limit), in_cap_units(spent), in_cap_units(committed)
    for unit, value in lim.items():
        if math.isfinite(value) and sp[unit] + co[unit] > value * (1 + 1e-9):
            over = sp[unit] + co[unit] - value
            return (
                f"hpaudit: study '{study}' has passed the {name} ({_fmt(value, unit)}) by "
                f"{_fmt(over, unit)} ({_fmt(sp[unit], unit)} spent, {_fmt(co[unit], unit)} "
                f'reserved by running trials; estimate); on_exceed = "warn": the cap is not '
                f"enforced, the study's own budget still is"
            )
    return None

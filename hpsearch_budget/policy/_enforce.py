"""Enforcement: which caps apply to a sweep, and whether its forecast fits what remains.

The Optuna and Ray integrations call :func:`limits_for` to get the ``(scope, limit)`` pairs they
pass to :meth:`Ledger.try_reserve <hpsearch_budget.ledger.Ledger.try_reserve>` before each
trial, and :func:`admit` once before a sweep starts. Months are calendar months in UTC; a ledger
row counts in the month its window was opened (``Scope.since`` / ``until``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.errors import BudgetExceededError, HpauditInputError
from hpsearch_budget.ledger import Scope
from hpsearch_budget.policy._identity import resolve_identity
from hpsearch_budget.policy._model import CAP_UNITS, UNIT_LABELS, CapLimits

if TYPE_CHECKING:
    from hpsearch_budget.carbon import CarbonModel
    from hpsearch_budget.policy._model import Policy

logger = logging.getLogger("hpsearch_budget.policy")

CapKind = Literal["budget", "study", "project", "user"]


class SpendSource(Protocol):
    """What enforcement reads from a ledger (:class:`hpsearch_budget.ledger.Ledger` has it)."""

    def spent(self, scope: Scope = ...) -> Cost: ...

    def committed(self, scope: Scope = ...) -> Cost: ...


def _now() -> datetime:
    """The current time, UTC: the one clock calendar-month caps are read with."""
    return datetime.now(UTC)


def as_utc(now: datetime | None = None) -> datetime:
    """``now`` in UTC: None is the current time, a naive datetime is read as UTC."""
    if now is None:
        return _now()
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC)
    return now.astimezone(UTC)


def month_bounds(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The calendar month (UTC) that contains ``now``: ``[first day 00:00, next first day)``.

    >>> from datetime import datetime, UTC
    >>> start, end = month_bounds(datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    >>> start.isoformat(), end.isoformat()
    ('2026-12-01T00:00:00+00:00', '2027-01-01T00:00:00+00:00')
    """
    start = as_utc(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def in_cap_units(cost: Cost) -> dict[str, float]:
    """A Cost in the units caps are written in: kg CO2e, kWh, USD, GPU-hours."""
    return {
        "co2e_kg": cost.co2e_kg,
        "energy_kwh": cost.energy_kwh,
        "usd": cost.usd,
        "gpu_hours": cost.gpu_hours,
    }


def _fmt(value: float, unit: str) -> str:
    if math.isinf(value):
        return "no limit"
    return f"{value:.4g} {UNIT_LABELS[unit]}"


def _fraction(used: float, limit: float) -> float:
    if limit == 0:  # a closed cap: anything spent is infinitely over
        return math.inf if used > 0 else 0.0
    return used / limit


@dataclass(frozen=True)
class CapStatus:
    """One cap and how much of it is gone, in :class:`Cost` units (J, g, USD, s)."""

    name: str  # "project 'nlp' monthly CO2e cap"
    kind: CapKind
    who: str  # the study, project or user the cap is about
    scope: Scope
    limit: Cost  # +inf in the units the cap does not limit
    spent: Cost = field(default_factory=Cost)
    committed: Cost = field(default_factory=Cost)  # reserved by running trials

    @property
    def remaining(self) -> Cost:
        """What is left: limit - spent - committed (negative once overspent, inf if unset)."""
        return self.limit - self.spent - self.committed

    def units(self) -> list[str]:
        """The cap's limited units, as Budget-style names (``co2e_kg``...)."""
        return [u for u, v in in_cap_units(self.limit).items() if math.isfinite(v)]

    def used_fraction(self, extra: Cost | None = None) -> dict[str, float]:
        """Per limited unit, the fraction used by spent + committed (+ ``extra``)."""
        used = self.spent + self.committed + (extra or Cost())
        u, lim = in_cap_units(used), in_cap_units(self.limit)
        return {unit: _fraction(u[unit], lim[unit]) for unit in self.units()}

    def over_by(self, forecast: Cost) -> dict[str, float]:
        """Per limited unit where ``forecast`` does not fit, by how much (cap units).

        A used-up unit is listed too (over by max(0, forecast - remaining)), even for a zero
        forecast: a sweep that cannot spend anything cannot run a trial.
        """
        f, r, lim = (
            in_cap_units(forecast),
            in_cap_units(self.remaining),
            in_cap_units(self.limit),
        )
        out = {}
        for u in self.units():
            tolerance = 1e-9 * max(1.0, lim[u])
            if f[u] > r[u] + tolerance or r[u] <= tolerance:
                out[u] = max(0.0, f[u] - r[u])
        return out

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, in report units (kg CO2e, kWh, USD, GPU-h); null where no limit."""
        lim, sp, co, re_ = (
            in_cap_units(c) for c in (self.limit, self.spent, self.committed, self.remaining)
        )
        return {
            "name": self.name,
            "kind": self.kind,
            "who": self.who,
            "since": self.scope.since.isoformat() if self.scope.since else None,
            "until": self.scope.until.isoformat() if self.scope.until else None,
            "limit": {u: (lim[u] if math.isfinite(lim[u]) else None) for u in CAP_UNITS},
            "spent": sp,
            "committed": co,
            "remaining": {u: (re_[u] if math.isfinite(re_[u]) else None) for u in CAP_UNITS},
        }


@dataclass(frozen=True)
class Admission:
    """Whether a sweep's forecast fits what remains of every cap that applies to it.

    ``caps`` are the statuses read from the ledger; ``binding`` names the cap nearest to
    exhaustion once the forecast is spent (the one that refuses, when it does not fit).
    """

    fits: bool
    forecast: Cost
    caps: tuple[CapStatus, ...]
    binding: str | None
    binding_unit: str | None  # co2e_kg | energy_kwh | usd | gpu_hours
    over_by: float  # in binding_unit; 0.0 when the forecast fits
    message: str
    on_exceed: str

    @property
    def limits(self) -> list[tuple[Scope, Cost]]:
        """The ``(scope, limit)`` pairs to pass to ``Ledger.try_reserve``."""
        return [(c.scope, c.limit) for c in self.caps]

    @property
    def remaining(self) -> Cost:
        """What is left under every cap at once, componentwise (inf where nothing limits)."""
        out = Cost(math.inf, math.inf, math.inf, math.inf)
        for c in self.caps:
            r = c.remaining
            out = Cost(
                min(out.energy_j, r.energy_j),
                min(out.co2e_g, r.co2e_g),
                min(out.usd, r.usd),
                min(out.gpu_s, r.gpu_s),
            )
        return out


def cap_name(kind: CapKind, who: str, cap: CapLimits) -> str:
    """``project 'nlp' monthly CO2e cap``: how messages and reports name a cap."""
    if kind in ("project", "user"):
        return f"{kind} '{who}' monthly {cap.units_word()} cap"
    return f"study '{who}' {cap.units_word()} cap"


def limits_for(
    policy: Policy,
    study: str,
    project: str | None = None,
    user: str | None = None,
    now: datetime | None = None,
    *,
    budget: Budget | None = None,
) -> list[tuple[Scope, Cost, str]]:
    """Every cap that applies to a sweep, as ``(ledger scope, limit, name)``.

    The study's own ``budget`` (when given) and the policy's study cap cover the study's whole
    life; the project and user caps cover the calendar month (UTC) that contains ``now``. A
    limit is a :class:`Cost` with +inf in the units it does not limit. ``project`` and ``user``
    default as in :func:`resolve_identity`.

    >>> from datetime import datetime, UTC
    >>> from hpsearch_budget.policy import Policy
    >>> p = Policy.model_validate({"caps": {"user": "10 kWh"}})
    >>> (scope, limit, name), = p.limits_for("mnist", "vision", "ana", datetime(2026, 2, 14))
    >>> name, scope.since.day, scope.until.month, limit.energy_kwh
    ("user 'ana' monthly energy cap", 1, 3, 10.0)
    """
    return [(s.scope, s.limit, s.name) for s in _caps(policy, study, project, user, now, budget)]


def _caps(
    policy: Policy,
    study: str,
    project: str | None,
    user: str | None,
    now: datetime | None,
    budget: Budget | None,
) -> list[CapStatus]:
    if not isinstance(study, str) or not study:
        raise HpauditInputError(f"a study name is needed to look up its caps, got {study!r}")
    project, user = resolve_identity(study, project, user)
    since, until = month_bounds(now)
    out: list[CapStatus] = []
    if budget is not None:
        out.append(
            CapStatus(
                f"study '{study}' budget", "budget", study, Scope(study=study), budget.as_cost()
            )
        )
    cap = policy.caps.for_study(study)
    if cap is not None:
        out.append(
            CapStatus(
                cap_name("study", study, cap), "study", study, Scope(study=study), cap.as_cost()
            )
        )
    cap = policy.caps.for_project(project)
    if cap is not None:
        scope = Scope(project=project, since=since, until=until)
        out.append(
            CapStatus(cap_name("project", project, cap), "project", project, scope, cap.as_cost())
        )
    cap = policy.caps.for_user(user)
    if cap is not None:
        scope = Scope(user=user, since=since, until=until)
        out.append(CapStatus(cap_name("user", user, cap), "user", user, scope, cap.as_cost()))
    return out


def read_status(ledger: SpendSource, caps: Sequence[CapStatus]) -> list[CapStatus]:
    """The caps with what the ledger says is spent and committed under each."""
    return [
        CapStatus(
            c.name,
            c.kind,
            c.who,
            c.scope,
            c.limit,
            ledger.spent(c.scope),
            ledger.committed(c.scope),
        )
        for c in caps
    ]


def _check_forecast(forecast: Cost) -> None:
    for name, value in (
        ("energy_j", forecast.energy_j),
        ("co2e_g", forecast.co2e_g),
        ("usd", forecast.usd),
        ("gpu_s", forecast.gpu_s),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise HpauditInputError(
                f"forecast.{name} must be a finite number >= 0, got {value}; forecast the "
                "sweep's cost with the trial forecaster or pass Cost() to skip the check"
            )


def _binding(statuses: Sequence[CapStatus], forecast: Cost) -> tuple[CapStatus, str] | None:
    best: tuple[float, CapStatus, str] | None = None
    for status in statuses:
        for unit, fraction in status.used_fraction(forecast).items():
            if best is None or fraction > best[0]:
                best = (fraction, status, unit)
    return None if best is None else (best[1], best[2])


def _month_note(status: CapStatus) -> str:
    if status.scope.since is None or status.scope.until is None:
        return ""
    return f" in {status.scope.since:%Y-%m} (UTC; the cap resets on {status.scope.until:%Y-%m-%d})"


def _refusal(study: str, status: CapStatus, unit: str, forecast: Cost, over: float) -> str:
    f, lim = in_cap_units(forecast)[unit], in_cap_units(status.limit)[unit]
    spent = in_cap_units(status.spent)[unit]
    committed = in_cap_units(status.committed)[unit]
    left = in_cap_units(status.remaining)[unit]
    # The study's own budget is not in the policy file, and on_exceed does not apply to it.
    own = status.kind == "budget"
    raise_it = (
        "raise the budget or start a study with a new name"
        if own
        else 'raise the cap in the policy file, wait for it to reset, or set on_exceed = "warn"'
    )
    if left <= 0.0 or f <= left:  # nothing left (or already passed): no forecast can fit
        return (
            f"sweep '{study}' cannot start: the {status.name} ({_fmt(lim, unit)}) is used up"
            f"{_month_note(status)}: {_fmt(spent, unit)} spent and {_fmt(committed, unit)} "
            f"reserved by running trials; {raise_it}"
        )
    return (
        f"sweep '{study}' would exceed the {status.name} ({_fmt(lim, unit)}) by "
        f"{_fmt(over, unit)}: its forecast is {_fmt(f, unit)} (estimate) but only "
        f"{_fmt(max(left, 0.0), unit)} remain{_month_note(status)} after {_fmt(spent, unit)} "
        f"spent and {_fmt(committed, unit)} reserved by running trials; lower n_trials or the "
        + (
            "per-trial cost, or raise the budget"
            if own
            else 'per-trial cost, raise the cap in the policy file, or set on_exceed = "warn"'
        )
    )


def admit(
    policy: Policy,
    ledger: SpendSource,
    study: str,
    project: str | None,
    user: str | None,
    forecast: Cost,
    budget: Budget | None = None,
    now: datetime | None = None,
) -> Admission:
    """Check a sweep's forecast against what remains of every cap, before it starts.

    Reads spent and committed under each cap of :func:`limits_for` from ``ledger``. When the
    forecast exceeds what remains of any cap, raises :class:`BudgetExceededError` saying by how
    much and which cap binds, unless ``policy.on_exceed == "warn"``: then it logs that message
    as a warning and returns an :class:`Admission` with ``fits=False``.
    """
    _check_forecast(forecast)
    statuses = read_status(ledger, _caps(policy, study, project, user, now, budget))
    violations = [(s, u, over) for s in statuses for u, over in s.over_by(forecast).items()]
    if violations:
        # The binding cap is the one most over, relative to its size.
        status, unit, over = max(
            violations,
            key=lambda v: _fraction(v[2], in_cap_units(v[0].limit)[v[1]]),
        )
        message = _refusal(study, status, unit, forecast, over)
        if policy.on_exceed != "warn":
            raise BudgetExceededError(message)
        logger.warning('%s (on_exceed = "warn": the sweep runs anyway)', message)
        return Admission(
            False, forecast, tuple(statuses), status.name, unit, over, message, policy.on_exceed
        )
    found = _binding(statuses, forecast)
    if found is None:
        message = f"sweep '{study}': no cap applies"
        return Admission(
            True, forecast, tuple(statuses), None, None, 0.0, message, policy.on_exceed
        )
    status, unit = found
    left = in_cap_units(status.remaining - forecast)[unit]
    message = (
        f"sweep '{study}' fits: after its forecast (estimate), {_fmt(left, unit)} would remain of "
        f"the {status.name}, the nearest to exhaustion"
    )
    return Admission(
        True, forecast, tuple(statuses), status.name, unit, 0.0, message, policy.on_exceed
    )


def carbon_model(policy: Policy) -> CarbonModel:
    """The :class:`CarbonModel` of a policy's defaults (intensity, PUE, electricity price).

    What the defaults leave out is what a sweep gets without a policy: the ledger's default
    intensity (the world average) and the default PUE.
    """
    from hpsearch_budget.carbon import CarbonModel, StaticIntensity, resolve_intensity
    from hpsearch_budget.ledger import default_carbon

    d = policy.defaults
    base = default_carbon()
    provider = base.intensity
    if d.g_per_kwh is not None:
        source = f"lab policy ({policy.origin})" if policy.origin else "lab policy"
        provider = StaticIntensity.of(d.g_per_kwh, source)
    elif d.region is not None:
        provider = resolve_intensity(region=d.region)
    return CarbonModel(
        provider,
        pue=d.pue if d.pue is not None else base.pue,
        usd_per_kwh=d.usd_per_kwh if d.usd_per_kwh is not None else base.usd_per_kwh,
    )

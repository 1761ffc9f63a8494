"""The lab policy: pydantic v2 models of ``hpaudit.toml`` (or ``[tool.hpaudit]``).

A policy file, every table optional::

    on_exceed = "prune"            # or "stop", or "warn"

    [defaults]                     # the carbon model of every sweep run under this policy
    region = "us"                  # or g_per_kwh = 386 (not both)
    pue = 1.2
    usd_per_kwh = 0.12
    cloud_usd_per_gpu_hour = 2.5

    [caps.study]                   # every study, over its whole life
    co2e_kg = 5
    [caps.project]                 # every project, per calendar month (UTC)
    co2e_kg = 50
    gpu_hours = 400
    [caps.projects.nlp]            # project 'nlp' gets its own monthly cap instead
    co2e_kg = 120
    [caps]
    user = "300 kWh"               # every user, per calendar month (UTC); one-unit string form

    [reporting]                    # what a report of a sweep must contain
    seeds = 5
    sensitivity = true

Validation is strict: a wrong type, an unknown key (a typo must never silently disable a cap),
a negative cap or a cap without a unit are errors, each reported with its key path and a hint.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from hpsearch_budget.budget import Budget, Cost
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.units import hours_to_s, kg_to_g, kwh_to_j

if TYPE_CHECKING:
    from hpsearch_budget.carbon import CarbonModel
    from hpsearch_budget.ledger import Scope
    from hpsearch_budget.policy._enforce import Admission, SpendSource

#: What an integration does when a cap would be exceeded: ``prune`` the least promising
#: running trials (no new trial starts), ``stop`` the sweep (no new trial starts, running
#: trials stop at their next report), or only ``warn``.
OnExceed = Literal["prune", "stop", "warn"]

#: Cap fields in the order reports show them, with the word a cap's name uses.
CAP_UNITS: dict[str, str] = {
    "co2e_kg": "CO2e",
    "energy_kwh": "energy",
    "usd": "USD",
    "gpu_hours": "GPU-hours",
}
UNIT_LABELS: dict[str, str] = {
    "co2e_kg": "kg CO2e",
    "energy_kwh": "kWh",
    "usd": "USD",
    "gpu_hours": "GPU-h",
}

# Units accepted in the string form of a cap ("50 kg CO2e"), lower-cased, spaces and dashes
# removed. No scaling (t, MWh): conversions live in hpsearch_budget.units, and a lab that
# means tonnes can write the number in kg.
_UNIT_WORDS: dict[str, str] = {
    "kg": "co2e_kg",
    "kgco2e": "co2e_kg",
    "kgco2": "co2e_kg",
    "kwh": "energy_kwh",
    "usd": "usd",
    "$": "usd",
    "gpuh": "gpu_hours",
    "gpuhour": "gpu_hours",
    "gpuhours": "gpu_hours",
    "gpuhrs": "gpu_hours",
}
_CAP_STRING = re.compile(r"^\s*([-+]?[0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*(.*?)\s*$")
_UNIT_HINT = (
    "write the unit: a table like {co2e_kg = 50, gpu_hours = 400} (keys co2e_kg, energy_kwh, "
    'usd, gpu_hours) or a string like "50 kg CO2e", "300 kWh", "1000 USD", "400 GPU-h"'
)

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    # strict: "1.5" is not a number, 1 is not a boolean; forbid: a typo is an error, never a
    # silently ignored key; frozen: a loaded policy cannot drift while sweeps run.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _cap_error(kind: str, message: str) -> PydanticCustomError:
    # The message goes in through the context: pydantic formats templates with str.format,
    # and a user's text may hold braces.
    return PydanticCustomError(kind, "{message}", {"message": message, "hint": _UNIT_HINT})


def _parse_cap_string(text: str) -> dict[str, float]:
    match = _CAP_STRING.match(text)
    if not match:
        raise _cap_error("cap_string", f"cannot read a cap from {text!r}")
    number, unit = match.groups()
    if not unit:
        raise _cap_error("cap_without_unit", f"a cap without a unit: {text!r}")
    field = _UNIT_WORDS.get(re.sub(r"[\s\-_]", "", unit.lower()))
    if field is None:
        raise _cap_error("cap_unit", f"unknown unit {unit!r} in the cap {text!r}")
    return {field: float(number.replace("_", ""))}


class CapLimits(_Strict):
    """One cap: any non-empty combination of kg CO2e, kWh, USD and GPU-hours.

    In the file, a table (``{co2e_kg = 50, gpu_hours = 400}``) or one string with its unit
    (``"50 kg CO2e"``). A bare number is an error: its unit would be a guess. As in
    :class:`~hpsearch_budget.budget.Budget`, ``energy_kwh`` counts energy at the devices
    (before PUE); ``co2e_kg`` and ``usd`` include the PUE.

    >>> CapLimits.model_validate({"co2e_kg": 50}).describe()
    '50 kg CO2e'
    >>> CapLimits.model_validate("400 GPU-h").gpu_hours
    400.0
    """

    co2e_kg: NonNegative | None = None
    energy_kwh: NonNegative | None = None
    usd: NonNegative | None = None
    gpu_hours: NonNegative | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return _parse_cap_string(data)
        if isinstance(data, int | float) and not isinstance(data, bool):
            raise _cap_error("cap_without_unit", f"a cap without a unit: {data!r}")
        return data

    @model_validator(mode="after")
    def _non_empty(self) -> CapLimits:
        if not self.limits():
            raise _cap_error("cap_empty", "a cap with no limit in it")
        return self

    def limits(self) -> dict[str, float]:
        """The limits that are set, in the cap's own units."""
        values = {name: getattr(self, name) for name in CAP_UNITS}
        return {name: value for name, value in values.items() if value is not None}

    def as_cost(self) -> Cost:
        """The cap in :class:`Cost` units; unset units are +inf (no limit).

        >>> CapLimits(co2e_kg=2.0).as_cost().co2e_g
        2000.0
        """
        inf = math.inf
        return Cost(
            energy_j=kwh_to_j(self.energy_kwh) if self.energy_kwh is not None else inf,
            co2e_g=kg_to_g(self.co2e_kg) if self.co2e_kg is not None else inf,
            usd=self.usd if self.usd is not None else inf,
            gpu_s=hours_to_s(self.gpu_hours) if self.gpu_hours is not None else inf,
        )

    def units_word(self) -> str:
        """``CO2e``, ``CO2e/GPU-hours``...: the units this cap limits, for its name."""
        return "/".join(CAP_UNITS[name] for name in self.limits())

    def describe(self) -> str:
        return ", ".join(f"{v:g} {UNIT_LABELS[k]}" for k, v in self.limits().items())


class Caps(_Strict):
    """Caps per study (whole life), per project and per user (each calendar month, UTC).

    ``projects`` / ``users`` / ``studies`` give a named one its own cap, which replaces the
    general one for it (a big project may get more, a closed one ``co2e_kg = 0``).
    """

    study: CapLimits | None = None
    project: CapLimits | None = None
    user: CapLimits | None = None
    studies: dict[str, CapLimits] = Field(default_factory=dict)
    projects: dict[str, CapLimits] = Field(default_factory=dict)
    users: dict[str, CapLimits] = Field(default_factory=dict)

    def for_study(self, study: str) -> CapLimits | None:
        return self.studies.get(study, self.study)

    def for_project(self, project: str) -> CapLimits | None:
        return self.projects.get(project, self.project)

    def for_user(self, user: str) -> CapLimits | None:
        return self.users.get(user, self.user)

    def is_empty(self) -> bool:
        return not (
            self.study or self.project or self.user or self.studies or self.projects or self.users
        )


def _check_region(region: str) -> str:
    """Validate a region name against the carbon region table."""
    from hpsearch_budget.carbon import resolve_intensity

    try:
        resolve_intensity(region=region)
    except HpauditInputError as exc:
        raise PydanticCustomError(
            "unknown_region",
            "{message}",
            {"message": f"unknown region {region!r}", "hint": _region_hint(region, str(exc))},
        ) from None
    return region


def _region_hint(region: str, message: str) -> str:
    # The table's own message says how to list codes. Keep that, drop its repeat of the
    # problem and its CLI flag (--g-per-kwh), which a policy spells g_per_kwh.
    rest = message.removeprefix(f"unknown region {region!r}").split(", or pass")[0]
    match = re.match(r"\s*\((did you mean [^)]*)\)", rest)
    rest = rest[match.end() :] if match else rest
    rest = rest.lstrip(" :")
    prefix = f"{match.group(1)} " if match else ""
    return f"{prefix}{rest}; or give defaults.g_per_kwh instead"


class Defaults(_Strict):
    """The carbon and money model of sweeps under this policy (see :meth:`Policy.carbon_model`)."""

    region: str | None = None
    g_per_kwh: NonNegative | None = None
    pue: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] | None = None
    usd_per_kwh: NonNegative | None = None
    cloud_usd_per_gpu_hour: NonNegative | None = None

    @field_validator("region")
    @classmethod
    def _known_region(cls, region: str | None) -> str | None:
        return None if region is None else _check_region(region)

    @model_validator(mode="after")
    def _one_intensity(self) -> Defaults:
        if self.region is not None and self.g_per_kwh is not None:
            raise PydanticCustomError(
                "region_and_intensity",
                "{message}",
                {
                    "message": "both region and g_per_kwh are set",
                    "hint": 'keep one: region = "..." looks the intensity up, g_per_kwh = ... '
                    "gives it",
                },
            )
        return self


@dataclass(frozen=True, slots=True)
class RequirementCheck:
    """One ``[reporting]`` requirement checked against a report: met or not, and why."""

    key: Literal["seeds", "sensitivity", "variance"]
    required: int | bool  # seeds: the number required; the others: True
    found: int | bool  # seeds: the runs found; the others: whether the report has it
    met: bool
    detail: str


def _reported(
    key: Literal["sensitivity", "variance"], found: bool, what: str, by: str
) -> RequirementCheck:
    """A yes/no requirement: ``what`` must be in the report."""
    detail = f"{what} {'is' if found else 'is not'} reported; {by} requires it"
    return RequirementCheck(key, True, found, found, detail)


class Reporting(_Strict):
    """What every report of a sweep under this policy must contain."""

    seeds: Annotated[int, Field(ge=1)] | None = None  # final configuration run with n seeds
    sensitivity: bool = False  # hyperparameter sensitivity must be reported
    variance: bool = False  # seed variance / expected max must be reported

    def check(
        self,
        *,
        seeds_run: int = 0,
        sensitivity: bool = False,
        variance: bool = False,
        by: str = "the policy",
    ) -> list[RequirementCheck]:
        """Each requirement set here, met or not; ``by`` names the policy in the details.

        >>> [(c.key, c.met) for c in Reporting(seeds=5, variance=True).check(seeds_run=5)]
        [('seeds', True), ('variance', False)]
        """
        out = []
        if self.seeds is not None:
            runs = f"{seeds_run} seed{'' if seeds_run == 1 else 's'}"
            out.append(
                RequirementCheck(
                    "seeds",
                    self.seeds,
                    seeds_run,
                    seeds_run >= self.seeds,
                    f"the final configuration was run with {runs}; {by} requires {self.seeds}",
                )
            )
        if self.sensitivity:
            out.append(_reported("sensitivity", sensitivity, "hyperparameter sensitivity", by))
        if self.variance:
            out.append(_reported("variance", variance, "seed variance", by))
        return out

    def missing(
        self, *, seeds_run: int = 0, sensitivity: bool = False, variance: bool = False
    ) -> list[str]:
        """What a report lacks to meet these requirements (empty when it meets them all).

        >>> Reporting(seeds=5, sensitivity=True).missing(seeds_run=3, sensitivity=True)
        ['the final configuration was run with 3 seeds; the policy requires 5']
        """
        checks = self.check(seeds_run=seeds_run, sensitivity=sensitivity, variance=variance)
        return [c.detail for c in checks if not c.met]


class Policy(_Strict):
    """A lab policy: defaults, caps, what to do on exceeding one, reporting requirements.

    >>> p = Policy.model_validate({"caps": {"project": {"co2e_kg": 50}}, "on_exceed": "stop"})
    >>> [name for _, _, name in p.limits_for("mnist", "nlp", "ana")]
    ["project 'nlp' monthly CO2e cap"]
    """

    on_exceed: OnExceed = "prune"
    defaults: Defaults = Field(default_factory=Defaults)
    caps: Caps = Field(default_factory=Caps)
    reporting: Reporting = Field(default_factory=Reporting)

    # Where the policy was read from ("hpaudit.toml", "pyproject.toml [tool.hpaudit]"), None
    # for a policy built in code or the empty policy when no file was found.
    _origin: str | None = PrivateAttr(default=None)

    @property
    def origin(self) -> str | None:
        return self._origin

    def carbon_model(self) -> CarbonModel:
        """The :class:`CarbonModel` of the defaults: intensity, PUE and electricity price."""
        from hpsearch_budget.policy._enforce import carbon_model

        return carbon_model(self)

    def limits_for(
        self,
        study: str,
        project: str | None = None,
        user: str | None = None,
        now: datetime | None = None,
        *,
        budget: Budget | None = None,
    ) -> list[tuple[Scope, Cost, str]]:
        """Every cap that applies to a sweep, as ``(ledger scope, limit, name)``.

        See :func:`hpsearch_budget.policy.limits_for`.
        """
        from hpsearch_budget.policy._enforce import limits_for

        return limits_for(self, study, project, user, now, budget=budget)

    def admit(
        self,
        ledger: SpendSource,
        study: str,
        project: str | None,
        user: str | None,
        forecast: Cost,
        budget: Budget | None = None,
        now: datetime | None = None,
    ) -> Admission:
        """Check a sweep's forecast against what remains of every cap, before it starts.

        See :func:`hpsearch_budget.policy.admit`.
        """
        from hpsearch_budget.policy._enforce import admit

        return admit(self, ledger, study, project, user, forecast, budget, now)

    def summary(self) -> dict[str, Any]:
        """The policy as plain data (JSON-ready), with where it came from."""
        data = self.model_dump(exclude_none=True)
        return {"origin": self.origin, **data}


def policy_from_mapping(data: Mapping[str, Any], origin: str | None = None) -> Policy:
    """Validate a mapping (parsed TOML); raises pydantic's ValidationError on problems."""
    policy = Policy.model_validate(dict(data))
    policy._origin = origin
    return policy

"""The lab policy of ``hpaudit report``: found as sweeps find it, its ``[reporting]`` checked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hpsearch_budget.cli._common import fail
from hpsearch_budget.errors import HpauditInputError

if TYPE_CHECKING:
    from hpsearch_budget.policy import Policy
    from hpsearch_budget.report import Report


def report_policy(policy_file: Path | None, no_policy: bool, strict: bool) -> Policy | None:
    """The policy to check the report against (None: none found, or ``--no-policy``).

    ``--policy FILE``, else ``$HPAUDIT_POLICY``, else the nearest ``hpaudit.toml`` or
    ``[tool.hpaudit]`` upwards; a malformed file raises its one-line error (exit 2).
    """
    from hpsearch_budget.policy import load_policy

    if no_policy and (policy_file is not None or strict):
        other = "--policy" if policy_file is not None else "--strict-policy"
        raise HpauditInputError(f"give {other} or --no-policy, not both")
    if no_policy:
        return None
    policy = load_policy(policy_file)
    if policy.origin is not None:
        return policy
    if strict:  # CI asked for a check: a policy that is nowhere must not pass it silently
        raise HpauditInputError(
            "--strict-policy: no policy file found; create hpaudit.toml (or a [tool.hpaudit] "
            "table in pyproject.toml) here or in a parent folder, set $HPAUDIT_POLICY, or pass "
            "--policy FILE"
        )
    return None


def fail_if_missing(rep: Report) -> None:
    """``--strict-policy``: exit 1 (a failed check) when the report misses a requirement."""
    if rep.policy is None:
        return
    missing = [q.key for q in rep.policy.requirements if q.status == "missing"]
    if missing:
        fail(
            f"the report misses {len(missing)} requirement{'s' if len(missing) > 1 else ''} "
            f"of the lab policy {rep.policy.file}: {', '.join(missing)} (see its checklist)",
            code=1,
        )

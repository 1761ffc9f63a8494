"""A lab policy's ``[reporting]`` requirements, checked against what the report contains.

The policy (``hpaudit.toml``) may require the final configuration run with n seeds,
hyperparameter sensitivity and seed variance. The figures are the report's own: seeds are the
complete final training and seed reruns in the ledger as the variance section counts them
(repeated tuning trials and the projected ``--seeds`` are no run of the final configuration),
sensitivity is an importance actually computed, variance a seed variance actually reported.
"""

from __future__ import annotations

from hpsearch_budget.analysis import Importance, SeedVariance
from hpsearch_budget.analysis._variance import LEDGER_SEED_RUNS
from hpsearch_budget.policy import Policy, RequirementCheck
from hpsearch_budget.report import _model as m

# How to meet a missing requirement, appended to its row.
_SEEDS_HINT = "rerun the chosen configuration with more seeds, each a ledger window of phase 'seed'"


def policy_check(policy: Policy, seed: SeedVariance, sens: list[Importance]) -> m.PolicyCheck:
    """Each ``[reporting]`` requirement of ``policy``, ok or missing for this report."""
    by = policy.origin or "the policy"
    seeds_run = seed.spread.n if seed.spread and seed.origin == LEDGER_SEED_RUNS else 0
    computed = [i for i in sens if i.values]
    checks = policy.reporting.check(
        seeds_run=seeds_run,
        sensitivity=bool(computed),
        variance=seed.spread is not None,
        by=by,
    )
    hints = {
        "seeds": _SEEDS_HINT,
        "sensitivity": next((i.note for i in sens if not i.values and i.note), ""),
        "variance": seed.note,
    }
    return m.PolicyCheck(file=policy.origin, requirements=[_row(c, hints[c.key]) for c in checks])


def _row(c: RequirementCheck, hint: str) -> m.PolicyRequirement:
    """A requirement as a report row; a missing one says how to meet it."""
    detail = f"{c.detail}. {hint[0].upper()}{hint[1:]}" if hint and not c.met else c.detail
    return m.PolicyRequirement(
        key=c.key,
        label=f"Lab policy: {c.key}",
        status="ok" if c.met else "missing",
        required=c.required,
        found=c.found,
        detail=detail,
    )

"""Lab policy: carbon / energy / money / GPU-hour caps in a file that every sweep respects.

A lab writes ``hpaudit.toml`` (or ``[tool.hpaudit]`` in ``pyproject.toml``) once; the Optuna
and Ray integrations load it, refuse a sweep whose forecast exceeds what remains of a cap, and
reserve each trial's forecast in the ledger under every cap that applies.

>>> from hpsearch_budget.policy import parse_policy
>>> policy = parse_policy('''
... on_exceed = "stop"
... [caps.project]
... co2e_kg = 50
... ''')
>>> [name for _, _, name in policy.limits_for("bert-lr", project="nlp", user="ana")]
["project 'nlp' monthly CO2e cap"]
"""

from hpsearch_budget.policy._enforce import (
    Admission,
    CapStatus,
    SpendSource,
    admit,
    as_utc,
    limits_for,
    month_bounds,
    read_status,
)
from hpsearch_budget.policy._errors import InvalidPolicyError, PolicyProblem
from hpsearch_budget.policy._identity import Identity, login_name, resolve_identity
from hpsearch_budget.policy._load import (
    POLICY_ENV,
    find_policy,
    load_policy,
    parse_policy,
    read_policy,
    validate_policy,
)
from hpsearch_budget.policy._model import (
    CapLimits,
    Caps,
    Defaults,
    OnExceed,
    Policy,
    Reporting,
    RequirementCheck,
)

__all__ = [
    "POLICY_ENV",
    "Admission",
    "CapLimits",
    "CapStatus",
    "Caps",
    "Defaults",
    "Identity",
    "InvalidPolicyError",
    "OnExceed",
    "Policy",
    "PolicyProblem",
    "Reporting",
    "RequirementCheck",
    "SpendSource",
    "admit",
    "as_utc",
    "find_policy",
    "limits_for",
    "load_policy",
    "login_name",
    "month_bounds",
    "parse_policy",
    "read_policy",
    "read_status",
    "resolve_identity",
    "validate_policy",
]

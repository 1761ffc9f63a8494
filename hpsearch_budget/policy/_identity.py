"""Who a sweep belongs to: its project and user, for per-project and per-user caps."""

from __future__ import annotations

import getpass
import os
from typing import NamedTuple

from hpsearch_budget.errors import HpauditInputError

PROJECT_ENV = "HPAUDIT_PROJECT"
USER_ENV = "HPAUDIT_USER"


class Identity(NamedTuple):
    """A sweep's project and user, as stored on every ledger row."""

    project: str
    user: str


def login_name() -> str:
    """The login name; ``uid<N>`` where none can be found (a container without a passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _explicit(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise HpauditInputError(
            f'{what} must be a non-empty name, got {value!r}; pass {what}="..." or leave it '
            f"out to use ${PROJECT_ENV if what == 'project' else USER_ENV}"
        )
    return value.strip()


def _from_env(name: str) -> str | None:
    # An empty variable (``HPAUDIT_PROJECT= python train.py``) means unset, not a project "".
    value = os.environ.get(name, "").strip()
    return value or None


def resolve_identity(study: str, project: str | None = None, user: str | None = None) -> Identity:
    """Project and user of a sweep.

    Each from the explicit argument, else ``$HPAUDIT_PROJECT`` / ``$HPAUDIT_USER``, else the
    study name (project) and the login name (user).

    >>> import os
    >>> os.environ["HPAUDIT_PROJECT"] = "nlp"
    >>> resolve_identity("bert-lr", user="ana")
    Identity(project='nlp', user='ana')
    >>> del os.environ["HPAUDIT_PROJECT"]
    """
    project = _explicit(project, "project") or _from_env(PROJECT_ENV) or study
    if not project:
        raise HpauditInputError(
            f'no project for an unnamed study: pass project="..." or set ${PROJECT_ENV}'
        )
    user = _explicit(user, "user") or _from_env(USER_ENV) or login_name()
    return Identity(project, user)

"""Scope: which ledger rows a sum covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hpsearch_budget.errors import HpauditInputError


def to_unix_s(when: datetime) -> float:
    """Seconds since the epoch; a naive datetime is read as UTC (the ledger's only zone)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Scope:
    """Which rows a sum covers; ``None`` means any.

    ``since`` is inclusive and ``until`` exclusive, both on the time a window was opened (UTC;
    naive datetimes are read as UTC).

    >>> from datetime import datetime, UTC
    >>> Scope(study="mnist", since=datetime(2026, 1, 1, tzinfo=UTC)).study
    'mnist'
    """

    study: str | None = None
    project: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise HpauditInputError(
                    f"Scope.{name} must be a datetime (UTC), got {type(value).__name__}"
                )
        if (
            self.since is not None
            and self.until is not None
            and to_unix_s(self.until) < to_unix_s(self.since)
        ):
            raise HpauditInputError(
                f"Scope.until ({self.until}) is before Scope.since ({self.since}); swap them"
            )

"""``--since`` / ``--until``: an ISO 8601 date or date and time, read as a point in time.

>>> parse_when("2026-01-31T14:00+01:00", "--since").isoformat()
'2026-01-31T13:00:00+00:00'
>>> parse_when("2026-01-31T14:00Z", "--until").isoformat()
'2026-01-31T14:00:00+00:00'
"""

from __future__ import annotations

from datetime import UTC, datetime

from hpsearch_budget.errors import HpauditInputError

_EXAMPLES = "e.g. 2026-01-31, 2026-01-31T14:00 (local time) or 2026-01-31T14:00+01:00"


def parse_when(text: str, option: str) -> datetime:
    """``text`` as an aware UTC datetime; without an offset it is the machine's local time
    (what a person typing a date at a terminal means), a date alone its local midnight."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HpauditInputError(
            f"{option} {text!r} is not an ISO 8601 date or time: write {_EXAMPLES}"
        ) from None
    try:
        # astimezone() reads a naive datetime as local time, an aware one keeps its instant
        return when.astimezone().astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise HpauditInputError(
            f"{option} {text!r} is out of range: write a date from 0001-01-02 to 9999-12-30"
        ) from None


def time_range(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """The parsed ``--since`` (inclusive) and ``--until`` (exclusive); until before since is
    bad input."""
    start = None if since is None else parse_when(since, "--since")
    end = None if until is None else parse_when(until, "--until")
    if start is not None and end is not None and end < start:
        raise HpauditInputError(
            f"--until {until!r} is before --since {since!r}; swap them (--until is exclusive)"
        )
    return start, end

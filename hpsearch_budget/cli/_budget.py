"""``hpaudit budget status``: each policy cap, what is spent and what remains this month."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hpsearch_budget.cli._common import OutputFormat, print_json
from hpsearch_budget.errors import HpauditInputError

if TYPE_CHECKING:
    import pandas as pd

    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.policy import CapLimits, CapStatus, Policy
    from hpsearch_budget.policy._enforce import CapKind

_UNITS = {"co2e_kg": "kg CO2e", "energy_kwh": "kWh", "usd": "USD", "gpu_hours": "GPU-h"}


def _month(value: str | None) -> datetime:
    """The instant whose month is reported: ``YYYY-MM`` (its first second) or now."""
    if value is None:
        return datetime.now(UTC)
    match = re.fullmatch(r"(\d{4})-(\d{2})", value.strip())
    year, month = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    # datetime has no year 0, and 9999-12 would end in year 10000
    if not 1 <= month <= 12 or not (1, 1) <= (year, month) <= (9999, 11):
        raise HpauditInputError(
            f"--month must be YYYY-MM (a UTC calendar month, 0001-01 to 9999-11), got {value!r}"
        )
    return datetime(year, month, 1, tzinfo=UTC)


def _open_ledger(url: str | None) -> Ledger:
    """Open an existing ledger; a status query must never create an empty database."""
    from sqlalchemy.engine import make_url

    from hpsearch_budget.ledger import Ledger

    # The Ledger's own default (docs/contracts.md), resolved here to check the file first.
    resolved = (url or os.environ.get("HPAUDIT_LEDGER") or "sqlite:///hpaudit.db").strip()
    try:
        parsed = make_url(resolved)
    except Exception:  # the Ledger says what is wrong with the URL, in one line
        return Ledger(resolved, create=False)
    database = parsed.database or ""
    is_file_db = parsed.get_backend_name() == "sqlite" and database not in ("", ":memory:")
    if is_file_db and not Path(database).is_file():
        raise HpauditInputError(
            f"no ledger at {database}: pass --ledger URL (or set $HPAUDIT_LEDGER) "
            "to the ledger your sweeps write to"
        )
    # create=False: no schema written into an empty (or mistyped) PostgreSQL database either
    return Ledger(resolved, create=False)


def _weakest(frame: pd.DataFrame) -> str | None:
    """The least trustworthy energy source among ledger rows: the label their sum carries."""
    from hpsearch_budget.meters.base import Source, weakest

    known = {str(s) for s in Source}
    found = weakest([Source(s) for s in frame["source"].dropna().astype(str) if s in known])
    return None if found is None else str(found)


def _names(column: pd.Series[Any]) -> set[str]:
    return {str(v) for v in column.dropna() if str(v)}


def collect(
    policy: Policy,
    ledger: Ledger,
    when: datetime,
    projects: list[str] | None = None,
    users: list[str] | None = None,
) -> tuple[list[CapStatus], dict[str, str | None]]:
    """Every project and user cap of ``when``'s month, and the caps of the studies active in
    it, read from the ledger; with the weakest energy source behind each (by cap name).

    Projects and users without a cap are listed with what they spent (limit: infinite).
    """
    from hpsearch_budget.budget import Cost
    from hpsearch_budget.ledger import Scope
    from hpsearch_budget.policy import CapStatus, month_bounds, read_status
    from hpsearch_budget.policy._enforce import cap_name

    since, until = month_bounds(when)
    month = ledger.entries(scope=Scope(since=since, until=until))
    no_cap = Cost(math.inf, math.inf, math.inf, math.inf)
    statuses: list[CapStatus] = []
    sources: dict[str, str | None] = {}
    groups: tuple[tuple[CapKind, list[str] | None, Any, Callable[[str], CapLimits | None]], ...] = (
        ("project", projects, policy.caps.projects, policy.caps.for_project),
        ("user", users, policy.caps.users, policy.caps.for_user),
    )
    for kind, asked, named, lookup in groups:
        names = set(asked or []) if (projects or users) else _names(month[kind]) | set(named)
        for who in sorted(names):
            cap = lookup(who)
            scope = Scope(since=since, until=until, **{kind: who})
            name = cap_name(kind, who, cap) if cap else f"{kind} '{who}' (no monthly cap)"
            statuses.append(CapStatus(name, kind, who, scope, cap.as_cost() if cap else no_cap))
            sources[name] = _weakest(month[month[kind] == who])
    if not (projects or users):  # a study cap covers the study's whole life
        for study in sorted(_names(month["study"])):
            cap = policy.caps.for_study(study)
            if cap is not None:
                name = cap_name("study", study, cap)
                statuses.append(CapStatus(name, "study", study, Scope(study=study), cap.as_cost()))
                sources[name] = _weakest(ledger.entries(study=study))
    return read_status(ledger, statuses), sources


def _row_units(status: CapStatus) -> list[str]:
    return status.units() or ["co2e_kg", "energy_kwh"]


def _num(value: float) -> str:
    return "-" if math.isinf(value) else f"{value:.4g}"


def render_text(
    statuses: list[CapStatus], sources: dict[str, str | None], header: list[str]
) -> list[str]:
    """A fixed-width table: one line per cap and unit."""
    from hpsearch_budget.policy._enforce import in_cap_units

    head = ("cap", "unit", "limit", "spent", "reserved", "remaining", "used", "energy source")
    rows: list[tuple[str, ...]] = []
    for s in statuses:
        lim, sp, co = in_cap_units(s.limit), in_cap_units(s.spent), in_cap_units(s.committed)
        left, used = in_cap_units(s.remaining), s.used_fraction()
        source = sources.get(s.name) or "no rows"
        if source == "estimated":
            source = "estimated (not measured)"
        for unit in _row_units(s):
            fraction = used.get(unit)
            shown = (
                "-"
                if fraction is None
                else ("OVER" if fraction > 1 + 1e-9 else f"{100 * fraction:.0f}%")
            )
            rows.append(
                (
                    s.name,
                    _UNITS[unit],
                    _num(lim[unit]),
                    _num(sp[unit]),
                    _num(co[unit]),
                    "no cap" if math.isinf(left[unit]) else _num(left[unit]),
                    shown,
                    source,
                )
            )
    if not rows:
        # Caps for "every project/user" apply only to names seen in the ledger this month.
        return [
            *header,
            "",
            "nothing to show: no ledger rows in this month and no cap names a project, user "
            "or study (pass --project NAME or --user NAME to see a default cap)",
        ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [*header, ""]
    for r in (head, *rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


def status(
    policy_file: Path | None = typer.Option(
        None,
        "--policy",
        help="Policy file; default: $HPAUDIT_POLICY, else hpaudit.toml or "
        "pyproject.toml \\[tool.hpaudit] from the working directory upwards.",
        show_default=False,
    ),
    ledger_url: str | None = typer.Option(
        None,
        "--ledger",
        help="Ledger URL; default: $HPAUDIT_LEDGER, else sqlite:///hpaudit.db.",
        show_default=False,
    ),
    output: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json."),
    month: str | None = typer.Option(
        None,
        "--month",
        help="A UTC calendar month, YYYY-MM; default: the current one.",
        show_default=False,
    ),
    project: list[str] | None = typer.Option(
        None, "--project", help="Only this project (repeatable).", show_default=False
    ),
    user: list[str] | None = typer.Option(
        None, "--user", help="Only this user (repeatable).", show_default=False
    ),
) -> None:
    """Each cap of the lab policy, what is spent and what remains, per project and user."""
    from hpsearch_budget.policy import load_policy, month_bounds

    when = _month(month)
    policy = load_policy(policy_file)
    ledger = _open_ledger(ledger_url)
    try:
        statuses, sources = collect(policy, ledger, when, project or None, user or None)
        url = _safe_url(ledger.url)
    finally:
        ledger.close()
    since, until = month_bounds(when)
    if output == OutputFormat.json:
        print_json(
            {
                "month": f"{since:%Y-%m}",
                "since": since.isoformat(),
                "until": until.isoformat(),
                "policy": policy.origin,
                "ledger": url,
                "on_exceed": policy.on_exceed,
                "caps": [
                    {
                        **s.as_dict(),
                        "energy_source": sources.get(s.name),
                        "exceeded": any(f > 1 + 1e-9 for f in s.used_fraction().values()),
                    }
                    for s in statuses
                ],
            }
        )
        return
    header = [
        f"Budget status for {since:%Y-%m} (UTC, {since:%Y-%m-%d} to {until:%Y-%m-%d}); "
        f"study caps cover each study's whole life",
        f"policy: {policy.origin or 'none found (no caps)'}; on_exceed = {policy.on_exceed}; "
        f"ledger: {url}",
    ]
    print("\n".join(render_text(statuses, sources, header)))


def _safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def register(app: typer.Typer) -> None:
    """Add ``hpaudit budget status``."""
    group = typer.Typer(
        help="Budgets and policy caps: what is spent, what remains.", no_args_is_help=True
    )
    group.command("status")(status)
    app.add_typer(group, name="budget")

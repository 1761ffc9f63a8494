"""The click exceptions :func:`hpsearch_budget.cli.main` turns into one line, wherever the
installed typer keeps its click."""

from __future__ import annotations

try:  # typer >= 0.24 bundles its own click
    from typer._click import exceptions as _exceptions
except ImportError:  # pragma: no cover - older typer on top of click
    from click import exceptions as _exceptions  # type: ignore[no-redef]

ClickException = _exceptions.ClickException


class _NeverRaised(_exceptions.UsageError):
    """Stands in where click has no NoArgsIsHelpError (a UsageError there)."""


# click < 8.2 (typer 0.15.4 needs it, later typer accepts it) has no NoArgsIsHelpError: it
# prints the group's help itself and exits 0 through click.exceptions.Exit, handled by click.
NoArgsIsHelpError: type[_exceptions.UsageError] = getattr(
    _exceptions, "NoArgsIsHelpError", _NeverRaised
)

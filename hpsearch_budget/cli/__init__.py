"""``hpaudit``: the command line.

Each command group lives in its own module and registers itself on the one Typer app.
Bad input never shows a traceback: :func:`main` prints one line and exits 2.
"""

from __future__ import annotations

import sys

import typer

from hpsearch_budget.cli import _budget, _estimate, _ledger, _policy, _report
from hpsearch_budget.errors import HpauditError

app = typer.Typer(
    name="hpaudit",
    help="Audit and budget the energy, carbon and money cost of hyperparameter search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Audit and budget the energy, carbon and money cost of hyperparameter search."""


@app.command()
def version() -> None:
    """Print the installed version."""
    from hpsearch_budget import __version__

    print(__version__)


for _module in (_estimate, _ledger, _report, _policy, _budget):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning library errors into one-line messages."""
    try:
        app(args=argv, standalone_mode=True)
    except HpauditError as exc:
        print(f"hpaudit: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":  # pragma: no cover
    main()

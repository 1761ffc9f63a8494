"""``hpaudit``: the command line.

Each command group lives in its own module and registers itself on the one Typer app.
Bad input never shows a traceback: :func:`main` prints one line and exits 2.
"""

from __future__ import annotations

import sys

import typer

from hpsearch_budget.cli import _budget, _estimate, _ledger, _policy, _report
from hpsearch_budget.cli._click import ClickException, NoArgsIsHelpError
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
    """Console entry point: run the app, turning every error into one line on stderr.

    Typer's own usage errors (unknown option, missing value, bad choice) would print a boxed
    panel; running it with ``standalone_mode=False`` lets us print them as one line, exit 2.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        result = app(args=args or ["--help"], prog_name="hpaudit", standalone_mode=False)
    except HpauditError as exc:
        print(f"hpaudit: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except NoArgsIsHelpError as exc:
        # `hpaudit ledger` with no subcommand: show the group's help, like bare `hpaudit`
        # (rich has already printed it; plain click returns it as the message).
        if exc.format_message().strip():
            print(exc.format_message())
        raise SystemExit(0) from None
    except ClickException as exc:
        print(f"hpaudit: error: {exc.format_message()}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        print("hpaudit: aborted", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("hpaudit: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(result if isinstance(result, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

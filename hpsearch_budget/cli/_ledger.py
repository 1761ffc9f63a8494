"""``hpaudit verify``, ``hpaudit export`` and ``hpaudit ledger studies|show``.

These commands only read: they never create a ledger (a mistyped path is an error, exit 2).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpsearch_budget.cli._common import OutputFormat, console, print_json
from hpsearch_budget.units import j_to_kwh, s_to_hours

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

LedgerOption = Annotated[
    str | None,
    typer.Option(
        "--ledger",
        envvar="HPAUDIT_LEDGER",
        help="Ledger URL: sqlite:///path.db or postgresql+psycopg://user@host/db "
        "[default: sqlite:///hpaudit.db]",
        show_default=False,
    ),
]
StudyOption = Annotated[str | None, typer.Option("--study", help="Only this study.")]


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"
    json = "json"
    codecarbon = "codecarbon"


def _open(url: str | None) -> Ledger:
    from hpsearch_budget.ledger import Ledger

    return Ledger(url, create=False)


def _known_study(ledger: Ledger, study: str | None) -> None:
    from hpsearch_budget.errors import HpauditInputError

    if study is not None and study not in (names := ledger.studies()):
        shown = ", ".join(names[:10]) if names else "none"
        raise HpauditInputError(f"no study {study!r} in the ledger; studies: {shown}")


def verify(
    ledger: LedgerOption = None,
    study: StudyOption = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="text or json")] = OutputFormat.text,
) -> None:
    """Check the hash chains: exit 0 if sound, 1 naming the first edited/inserted/deleted row."""
    with _open(ledger) as opened:
        _known_study(opened, study)
        report = opened.verify(study)
    if fmt is OutputFormat.json:
        print_json(
            {
                "ok": report.ok,
                "studies": report.studies,
                "rows": report.rows,
                "problems": [
                    {"study": p.study, "kind": p.kind, "row_id": p.row_id, "seq": p.seq,
                     "message": p.message}
                    for p in report.problems
                ],
            }
        )  # fmt: skip
    else:
        console.print(report.summary(), highlight=False, soft_wrap=True)
        for problem in report.problems[1:]:
            console.print(f"also: {problem.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


_WHEN = "ISO 8601 date or time, e.g. 2026-01-31 or 2026-01-31T14:00+01:00 (no offset: local time)"


def export(
    out: Annotated[Path, typer.Option("--out", help="File to write (replaced atomically).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv, parquet, json or codecarbon")],
    ledger: LedgerOption = None,
    study: StudyOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help=f"Only windows started at or after: {_WHEN}.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help=f"Only windows started before: {_WHEN}.")
    ] = None,
) -> None:
    """Write the ledger's rows to a file: csv, parquet, json, or CodeCarbon's emissions.csv
    columns. csv, json and codecarbon are written 5,000 rows at a time (bounded memory on any
    ledger); parquet holds every row it writes in memory (~5 KB a row)."""
    from hpsearch_budget.cli._when import time_range
    from hpsearch_budget.ledger import Scope, export_chunks

    start, end = time_range(since, until)  # bad input before the ledger is opened
    with _open(ledger) as opened:
        _known_study(opened, study)
        # read while writing, inside the ledger's one read transaction
        chunks = opened.entry_chunks(study, Scope(since=start, until=end))
        n = export_chunks(chunks, out, fmt.value)
    console.print(f"wrote {n} rows to {out} ({fmt.value})", highlight=False, soft_wrap=True)


def studies(ledger: LedgerOption = None) -> None:
    """List the studies in the ledger with their windows and cost so far."""
    with _open(ledger) as opened:
        totals = opened.study_totals()  # one SQL aggregate, not every study's rows
    for name, windows, cost, has_estimates in totals:
        estimated = " (includes estimates)" if has_estimates else ""
        # Plain tab-separated lines: easy to read and to cut / awk.
        print(
            f"{name}\t{windows} windows\t{cost.energy_kwh:.4g} kWh (device){estimated}\t"
            f"{cost.co2e_kg:.4g} kg CO2e{estimated}"  # carbon follows from that energy
        )


def show(
    ledger: LedgerOption = None,
    study: StudyOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest rows to show.")] = 20,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="text or json")] = OutputFormat.text,
) -> None:
    """Show the newest windows: status, energy (with its source), CO2e, GPU time."""
    from rich.table import Table

    from hpsearch_budget.ledger._export import json_records

    with _open(ledger) as opened:
        _known_study(opened, study)
        frame = opened.entries(study, newest=limit)  # not the whole ledger for 20 rows
    if fmt is OutputFormat.json:
        # as `hpaudit export --format json` writes them: ISO 8601 in UTC, missing values null
        print_json(json_records(frame))
        return
    table = Table()
    for name in ("id", "study", "trial", "phase", "status"):  # in a narrow terminal: wrapped
        table.add_column(name, overflow="fold")
    # kWh at the devices, before PUE (the report's R&D table shows kWh x PUE).
    for name in ("kWh (device)", "source", "g CO2e", "GPU-h"):  # figures, labels never cut
        table.add_column(name, no_wrap=True)
    for r in frame.itertuples(index=False):
        table.add_row(
            str(r.id), r.study, r.trial_key, r.phase, r.status, f"{j_to_kwh(r.energy_j):.4g}",
            str(_plain(r.source) or "-"), f"{r.co2e_g:.4g}", f"{s_to_hours(r.gpu_s):.3g}",
        )  # fmt: skip
    console.print(table)
    if (frame.source == "estimated").any():
        console.print("kWh marked 'estimated' come from a model, not a hardware counter.")


def _plain(value: object) -> object:
    """A table cell: pandas' missing values (NaN, NA, NaT) become None."""
    import pandas as pd

    return None if pd.isna(value) else value  # type: ignore[call-overload]


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("verify")(verify)
    app.command("export")(export)
    group = typer.Typer(help="Look inside the energy ledger.", no_args_is_help=True)
    group.command("studies")(studies)
    group.command("show")(show)
    app.add_typer(group, name="ledger")

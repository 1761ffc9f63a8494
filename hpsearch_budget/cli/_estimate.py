"""``hpaudit estimate`` (the paper's Eq. 1 and 2 from power and hours) and ``hpaudit regions``.

Numbers are read as text and parsed here, so a malformed value gets the library's one-line
error (exit 2) rather than a usage panel.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from hpsearch_budget.analysis._paper import PAPER_PUE, estimate, paper_intensity
from hpsearch_budget.carbon import IntensityProvider, resolve_intensity
from hpsearch_budget.carbon import regions as region_table
from hpsearch_budget.carbon.prices import EDITIONS
from hpsearch_budget.cli._common import OutputFormat, console, print_json
from hpsearch_budget.errors import HpauditInputError

_FORMAT = typer.Option("--format", "-f", help="text (a table) or json (for scripts).")


def _number(text: str | None, option: str, *, minimum: float = 0.0) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise HpauditInputError(f"{option} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= minimum):
        raise HpauditInputError(f"{option} must be a finite number >= {minimum:g}, got {text}")
    return value


def _devices(text: str | None) -> int:
    if text is None:
        return 1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise HpauditInputError(f"--gpus must be a whole number >= 1, got {text!r}")
    return value


def estimate_command(
    power_w: Annotated[
        str | None,
        typer.Option(
            "--power-w", metavar="W", help="Average draw of the machine in W: p_c + p_r + g x p_g."
        ),
    ] = None,
    hours: Annotated[
        str | None, typer.Option("--hours", metavar="H", help="Wall-clock hours.")
    ] = None,
    pue: Annotated[
        str | None,
        typer.Option(
            "--pue", metavar="PUE", help=f"Power usage effectiveness (default {PAPER_PUE})."
        ),
    ] = None,
    lbs_per_kwh: Annotated[
        str | None,
        typer.Option(
            "--lbs-per-kwh",
            metavar="X",
            help="Grid intensity in lbs CO2e/kWh (default 0.954, EPA).",
        ),
    ] = None,
    g_per_kwh: Annotated[
        str | None, typer.Option("--g-per-kwh", metavar="X", help="Grid intensity in g CO2e/kWh.")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region", metavar="CODE", help="Country or cloud region code (see `hpaudit regions`)."
        ),
    ] = None,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu", metavar="NAME", help="Accelerator for the cloud cost: P100, V100, ..."
        ),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", metavar="G", help="Number of accelerators (default 1).")
    ] = None,
    usd_per_kwh: Annotated[
        str | None,
        typer.Option(
            "--usd-per-kwh", metavar="USD", help="Electricity price (default: US average, EIA)."
        ),
    ] = None,
    prices: Annotated[
        str,
        typer.Option(
            "--prices", metavar="EDITION", help="Cloud price edition: current or strubell2019."
        ),
    ] = "current",
    fmt: Annotated[OutputFormat, _FORMAT] = OutputFormat.text,
) -> None:
    """Estimate energy, CO2e and cost from average power and hours (Strubell et al. 2019).

    Energy = PUE x hours x power / 1000 kWh; CO2e = intensity x energy. Without an intensity
    option the paper's 0.954 lbs/kWh (EPA, US) is used. All figures are estimates.
    """
    power, duration = _power_and_hours(power_w, hours)
    ratio = _number(pue, "--pue", minimum=1.0)
    provider = _intensity_provider(region, g_per_kwh, lbs_per_kwh)
    if gpus is not None and gpu is None:
        raise HpauditInputError("--gpus needs --gpu NAME (which accelerator to price)")
    if prices not in EDITIONS:  # checked even without --gpu: a typo is never ignored
        raise HpauditInputError(
            f"unknown price edition {prices!r} (--prices); use one of {', '.join(EDITIONS)}"
        )
    result = estimate(
        power_w=power,
        hours=duration,
        pue=PAPER_PUE if ratio is None else ratio,
        intensity=provider.at(datetime.now(UTC)) if provider else paper_intensity(),
        usd_per_kwh=_number(usd_per_kwh, "--usd-per-kwh"),
        accelerator=gpu,
        devices=_devices(gpus),
        price_edition=prices,
    )
    if fmt is OutputFormat.json:
        print_json(_json(result.as_dict()))
    else:
        console.print(_table(result.as_dict()))


def _power_and_hours(power_w: str | None, hours: str | None) -> tuple[float, float]:
    """The two required figures, parsed; a missing one is named, with an example."""
    if power_w is None or hours is None:
        missing = " and ".join(o for o, v in (("--power-w", power_w), ("--hours", hours)) if not v)
        raise HpauditInputError(
            f"missing {missing}: e.g. `hpaudit estimate --power-w 300 --hours 2`"
        )
    power = _number(power_w, "--power-w")
    duration = _number(hours, "--hours")
    assert power is not None and duration is not None  # checked above
    return power, duration


def _intensity_provider(
    region: str | None, g_per_kwh: str | None, lbs_per_kwh: str | None
) -> IntensityProvider | None:
    """The grid intensity of the one intensity option given (None: none given, the paper's)."""
    named = {"--region": region, "--g-per-kwh": g_per_kwh, "--lbs-per-kwh": lbs_per_kwh}
    given = [name for name, value in named.items() if value is not None]
    if len(given) > 1:
        raise HpauditInputError(f"give one intensity option, not {' and '.join(given)}")
    options = (region, _number(g_per_kwh, "--g-per-kwh"), _number(lbs_per_kwh, "--lbs-per-kwh"))
    if not given:
        return None
    return resolve_intensity(region=options[0], g_per_kwh=options[1], lbs_per_kwh=options[2])


def _json(record: dict[str, object]) -> dict[str, object]:
    keys = {
        "energy_kwh": "energy_kwh",
        "co2e_kg": "co2e_kg",
        "co2e_lbs": "co2e_lbs",
        "pue": "pue",
        "g_per_kwh": "intensity_g_per_kwh",
        "intensity_source": "intensity_source",
        "electricity_usd": "electricity_usd",
        "usd_per_kwh": "electricity_usd_per_kwh",
        "electricity_price_source": "electricity_price_source",
        "power_w": "power_w",
        "hours": "hours",
    }
    out: dict[str, object] = {"estimate": True}
    out.update({new: record[old] for old, new in keys.items()})
    if record["accelerator"] is not None:
        for key in ("accelerator", "devices", "cloud_usd_low", "cloud_usd_high"):
            out[key] = record[key]
        out["cloud_price_source"] = record["price_source"]
        out["cloud_price_date"] = record["price_date"]
    return out


def _table(r: dict[str, object]) -> Table:
    table = Table(title="Estimate (Strubell et al. 2019, Eq. 1-2): estimated, not measured")
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column("basis")
    table.add_row("energy (PUE incl.)", f"{r['energy_kwh']:,.3f} kWh", f"PUE {r['pue']:g}")
    table.add_row(
        "CO2e",
        f"{r['co2e_kg']:,.3f} kg ({r['co2e_lbs']:,.3f} lbs)",
        escape(f"{r['g_per_kwh']:.1f} g/kWh, {r['intensity_source']}"),
    )
    table.add_row(
        "electricity cost",
        f"${r['electricity_usd']:,.2f}",
        escape(f"{r['usd_per_kwh']:g} USD/kWh, {r['electricity_price_source']}"),
    )
    if r["accelerator"] is not None:
        table.add_row(
            "cloud cost",
            f"${r['cloud_usd_low']:,.0f} - ${r['cloud_usd_high']:,.0f}",
            escape(
                f"{r['devices']} x {r['accelerator']}, spot - on-demand, {r['price_source']}, "
                f"{r['price_date']}"
            ),
        )
    return table


def regions_command(
    kind: Annotated[
        str | None,
        typer.Option("--kind", metavar="KIND", help="Only 'country', 'cloud' or 'world' rows."),
    ] = None,
    fmt: Annotated[OutputFormat, _FORMAT] = OutputFormat.text,
) -> None:
    """List the region codes `--region` accepts, with their intensity, source and year."""
    rows = [r for r in region_table() if kind is None or r.kind == kind]
    if kind is not None and not rows:
        raise HpauditInputError(f"unknown --kind {kind!r}; use country, cloud or world")
    if fmt is OutputFormat.json:
        print_json(
            [
                {
                    "code": r.code,
                    "alias": r.alias or None,
                    "kind": r.kind,
                    "provider": r.provider or None,
                    "name": r.name,
                    "country": r.country or None,
                    "g_per_kwh": r.intensity.g_per_kwh,
                    "source": r.intensity.source,
                    "year": r.intensity.year,
                }
                for r in rows
            ]
        )
        return
    table = Table(title="Grid carbon intensity (location-based annual averages)")
    # Codes and numbers are what the user copies: never wrap or truncate them.
    for column in ("code", "alias", "provider", "name", "g/kWh", "source", "year"):
        wide = column in ("name", "source")
        justify: JustifyMethod = "right" if column == "g/kWh" else "left"
        table.add_column(column, justify=justify, no_wrap=not wide, overflow="fold")
    for r in rows:
        table.add_row(
            r.code,
            r.alias,
            r.provider,
            escape(r.name),
            f"{r.intensity.g_per_kwh:.1f}",
            escape(r.intensity.source),
            str(r.intensity.year or ""),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``estimate`` and ``regions`` to ``app``."""
    app.command("estimate")(estimate_command)
    app.command("regions")(regions_command)

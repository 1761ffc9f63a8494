"""``hpaudit report SOURCE``: the R&D cost, sensitivity and variance of a finished sweep."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpsearch_budget._out_file import refuse_to_replace_input
from hpsearch_budget.errors import HpauditInputError

if TYPE_CHECKING:
    from hpsearch_budget.analysis import Assumptions, Sweep
    from hpsearch_budget.carbon import Intensity, PriceRange


class ReportFormat(StrEnum):
    text = "text"
    md = "md"
    html = "html"
    json = "json"


class Evaluator(StrEnum):
    ped_anova = "ped-anova"
    fanova = "fanova"


class Direction(StrEnum):
    minimize = "minimize"
    maximize = "maximize"


@contextlib.contextmanager
def _progress() -> Iterator[typer.models.Any]:
    """A spinner with the current step on stderr, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda _msg: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("reading", total=None)
        yield lambda msg: bar.update(task, description=msg)


def report(
    source: Annotated[
        str,
        typer.Argument(
            help="Optuna storage URL (sqlite:///study.db, "
            "postgresql+psycopg://...), journal file, Ray Tune "
            "experiment folder, or ledger URL."
        ),
    ],
    study: Annotated[str | None, typer.Option(help="Study name (default: the only one).")] = None,
    ledger: Annotated[
        str | None,
        typer.Option(
            help="Ledger URL with the trials' energy (default: the one the study records in its "
            "'hpaudit_ledger' attribute, or a Ray folder's results in their 'hpaudit_ledger' "
            "key, or one in the study's own database)."
        ),
    ] = None,
    no_ledger: Annotated[
        bool,
        typer.Option(
            "--no-ledger",
            help="Use no ledger for an Optuna study or a Ray Tune folder: energy from the "
            "trials' user attributes or results.",
        ),
    ] = False,
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="Output format.")
    ] = ReportFormat.text,
    out: Annotated[
        Path | None, typer.Option(help="Write here (atomically) instead of stdout.")
    ] = None,
    final_epochs: Annotated[
        float,
        typer.Option(help="Final training = F x the chosen trial's cost (when not in the ledger)."),
    ] = 1.0,
    seeds: Annotated[
        int, typer.Option(help="Seed reruns of the final training (when not in the ledger).")
    ] = 0,
    region: Annotated[
        str | None, typer.Option(help="What if: grid region (FR, us-east-1, ...).")
    ] = None,
    g_per_kwh: Annotated[
        float | None, typer.Option(help="What if: grid intensity in g CO2e/kWh.")
    ] = None,
    pue: Annotated[
        float | None,
        typer.Option(help="What if: another PUE (also the assumption for rows without one)."),
    ] = None,
    more_trials: Annotated[
        int | None, typer.Option(help="What if: N more tuning trials (default: as many again).")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option(help="Accelerator for the cloud cost range (A100, V100, ...).")
    ] = None,
    direction: Annotated[
        Direction | None, typer.Option(help="Objective direction for a ledger or Ray source.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Ray Tune: the metric that is the objective.")
    ] = None,
    evaluator: Annotated[
        Evaluator, typer.Option(help="Importance evaluator (fANOVA is much slower).")
    ] = Evaluator.ped_anova,
    top_k: Annotated[int, typer.Option(help="Trials in the top-k spread.")] = 10,
    n_trials: Annotated[
        int | None,
        typer.Option(
            help="Planned trials of the sweep, to forecast the cost to finish it (default: the "
            "study's 'n_trials' user attribute, else unknown)."
        ),
    ] = None,
    cost_history: Annotated[
        str | None,
        typer.Option(
            help="Ledger URL of earlier sweeps over the same hyperparameters (other studies): "
            "forecast the cost to finish from a cost model learned on them (random search). "
            "Without it, a sweep of complete trials is forecast from a model of its own trials "
            "once it has a few more than parameters."
        ),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="Lab policy whose \\[reporting] requirements the report checks; default: "
            "$HPAUDIT_POLICY, else hpaudit.toml or pyproject.toml \\[tool.hpaudit] from the "
            "working directory upwards (none found: no check).",
            show_default=False,
        ),
    ] = None,
    no_policy: Annotated[bool, typer.Option("--no-policy", help="Check no lab policy.")] = False,
    strict_policy: Annotated[
        bool,
        typer.Option(
            "--strict-policy",
            help="Exit 1 (after writing the report) when it misses a requirement of the lab "
            "policy; exit 2 when no policy file is found. For CI.",
        ),
    ] = False,
) -> None:
    """Report the R&D cost, sensitivity and variance of a sweep (Strubell et al. 2019)."""
    from hpsearch_budget.cli._report_policy import fail_if_missing, report_policy
    from hpsearch_budget.report import build_report, load_sweep, render

    # Check every option before reading anything: a typo fails in milliseconds.
    _check_options(
        ledger=ledger,
        no_ledger=no_ledger,
        region=region,
        g_per_kwh=g_per_kwh,
        n_trials=n_trials,
        top_k=top_k,
        more_trials=more_trials,
        pue=pue,
        out=out,
    )
    if out is not None:  # before the (long) read: --out must not be the source itself
        refuse_to_replace_input(out, [source])
    lab = report_policy(policy_file, no_policy, strict_policy)  # a bad file fails fast too
    what_if, source_note = _what_if_intensity(region, g_per_kwh)
    price = _gpu_price(gpu)
    with _progress() as progress:
        sweep = load_sweep(
            source,
            study=study,
            ledger=ledger,
            metric=metric,
            direction=direction.value if direction else None,
            progress=progress,
            find_ledger=not no_ledger,
        )
        if source_note:
            sweep.notes.append(source_note)
        model = _cost_model(cost_history, sweep) if cost_history is not None else None
        rep = build_report(
            sweep,
            assumptions=_assumptions(sweep, final_epochs, seeds, pue, price),
            what_if_intensity=what_if,
            what_if_pue=pue,
            more_trials=more_trials,
            evaluator=evaluator.value,
            top_k=top_k,
            n_trials=n_trials,
            cost_model=model,
            policy=lab,
            progress=progress,
        )
        text = render(rep, fmt.value)
    _write(text, out, fmt)
    if strict_policy:
        fail_if_missing(rep)


def _check_options(
    *,
    ledger: str | None,
    no_ledger: bool,
    region: str | None,
    g_per_kwh: float | None,
    n_trials: int | None,
    top_k: int,
    more_trials: int | None,
    pue: float | None,
    out: Path | None,
) -> None:
    """Raise :class:`HpauditInputError` on the first option that cannot be right."""
    if ledger is not None and no_ledger:
        raise HpauditInputError("give --ledger or --no-ledger, not both")
    if region is not None and g_per_kwh is not None:
        raise HpauditInputError("give --region or --g-per-kwh, not both")
    if n_trials is not None and n_trials < 1:
        raise HpauditInputError(f"--n-trials must be >= 1, got {n_trials}")
    if top_k < 1:
        raise HpauditInputError(f"--top-k must be >= 1, got {top_k}")
    if more_trials is not None and more_trials < 0:
        raise HpauditInputError(f"--more-trials must be >= 0, got {more_trials}")
    if pue is not None and not (pue >= 1.0 and pue < float("inf")):
        raise HpauditInputError(f"--pue must be >= 1.0 (facility / IT power), got {pue}")
    if out is not None and not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise HpauditInputError(f"cannot write --out {str(out)!r}: its folder does not exist")


def _what_if_intensity(region: str | None, g_per_kwh: float | None) -> tuple[Intensity | None, str]:
    """The what-if grid intensity (None: not asked) and a note naming its source ("": none)."""
    from hpsearch_budget.carbon.intensity import Intensity

    if region is not None:
        from hpsearch_budget.carbon import region_intensity

        table = region_intensity(region)
        # A short label for the what-if row; the full source goes into the notes.
        what_if = Intensity(table.g_per_kwh, f"region {region}", table.year)
        return what_if, f"region {region}: {table.g_per_kwh:g} g/kWh from {table.label}"
    if g_per_kwh is not None:
        return Intensity(g_per_kwh, "user-supplied"), ""
    return None, ""


def _gpu_price(gpu: str | None) -> PriceRange | None:
    """The cloud price range of ``--gpu`` (None: not given)."""
    if gpu is None:
        return None
    from hpsearch_budget.carbon import gpu_price

    return gpu_price(gpu)


def _assumptions(
    sweep: Sweep, final_epochs: float, seeds: int, pue: float | None, price: PriceRange | None
) -> Assumptions:
    """The sweep's own assumptions with the options' final training, seeds, PUE and GPU price."""
    from hpsearch_budget.report import default_assumptions

    given = {} if pue is None else {"pue": pue, "pue_source": "given (--pue)"}
    a = default_assumptions(sweep, final_epochs=final_epochs, seeds=seeds, **given)
    if price is not None:
        a = replace(
            a,
            gpu_usd_per_hour=(price.low_usd_per_hour, price.high_usd_per_hour),
            gpu_price_label=f"{price.accelerator}: {price.source} ({price.date})",
        )
    return a


def _write(text: str, out: Path | None, fmt: ReportFormat) -> None:
    """The rendered report to stdout, or atomically to ``out`` with a line on stderr."""
    from hpsearch_budget.report import write_atomic

    if out is None:
        sys.stdout.write(text)
    else:
        write_atomic(out, text)
        print(f"hpaudit: wrote {fmt.value} report to {out}", file=sys.stderr)


def _cost_model(url: str, sweep: Any) -> Any:
    """The cost model of the other studies in ``url`` that share the sweep's parameters."""
    from hpsearch_budget.budget import TrialCostModel

    names = sorted({k for p in sweep.trials["params"] if isinstance(p, dict) for k in p})
    try:
        return TrialCostModel.from_ledger(url, exclude=[sweep.study], params=names)
    except HpauditInputError as exc:
        raise HpauditInputError(
            f"--cost-history: {exc} (other studies in that ledger with parameters "
            f"{', '.join(names) or 'none'})"
        ) from None


def register(app: typer.Typer) -> None:
    """Add ``hpaudit report`` to ``app``."""
    app.command("report")(report)

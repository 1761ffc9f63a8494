"""``hpaudit policy check [FILE]``: validate a lab policy file, listing every problem."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from hpsearch_budget.cli._common import OutputFormat, fail, print_json

_ON_EXCEED = {
    "prune": "prune the least promising running trials that would exceed a cap; no new "
    "trial starts",
    "stop": "stop the sweep: no new trial starts, running trials stop at their next report",
    "warn": "log a warning and go on",
}
_UNITS = {"co2e_kg": "kg CO2e", "energy_kwh": "kWh", "usd": "USD", "gpu_hours": "GPU-h"}


def _cap(limits: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {_UNITS[k]}" for k, v in limits.items())


def summary_lines(policy: Any) -> list[str]:
    """A valid policy, in words."""
    lines = [f"{policy.origin or 'policy'}: valid lab policy"]
    lines.append(f"  on_exceed: {policy.on_exceed} ({_ON_EXCEED[policy.on_exceed]})")
    d = policy.defaults
    parts = []
    if d.region is not None:
        parts.append(f"region {d.region}")
    if d.g_per_kwh is not None:
        parts.append(f"{d.g_per_kwh:g} g CO2e/kWh")
    if d.pue is not None:
        parts.append(f"PUE {d.pue:g}")
    if d.usd_per_kwh is not None:
        parts.append(f"{d.usd_per_kwh:g} USD/kWh")
    if d.cloud_usd_per_gpu_hour is not None:
        # No ledger row is charged with it (USD caps count electricity): say so, lest a lab
        # believe its USD caps include GPU rental.
        parts.append(f"{d.cloud_usd_per_gpu_hour:g} USD/GPU-h (cloud; not charged by sweeps)")
    lines.append(f"  defaults: {', '.join(parts) if parts else 'none (ledger defaults apply)'}")
    caps = policy.caps
    rows: list[tuple[str, Any]] = [
        ("every study, over its whole life", caps.study),
        ("every project, per calendar month (UTC)", caps.project),
        ("every user, per calendar month (UTC)", caps.user),
    ]
    rows += [(f"study {k!r}, over its whole life", v) for k, v in caps.studies.items()]
    rows += [(f"project {k!r}, per calendar month (UTC)", v) for k, v in caps.projects.items()]
    rows += [(f"user {k!r}, per calendar month (UTC)", v) for k, v in caps.users.items()]
    set_rows = [(who, cap) for who, cap in rows if cap is not None]
    lines.append("  caps:" + ("" if set_rows else " none"))
    lines += [f"    {who}: {_cap(cap.limits())}" for who, cap in set_rows]
    r = policy.reporting
    needs = []
    if r.seeds is not None:
        needs.append(f"final configuration run with {r.seeds} seeds")
    if r.sensitivity:
        needs.append("hyperparameter sensitivity")
    if r.variance:
        needs.append("seed variance")
    lines.append(f"  reporting requires: {', '.join(needs) if needs else 'nothing'}")
    return lines


def check(
    file: Path | None = typer.Argument(
        None,
        help="hpaudit.toml or pyproject.toml; default: $HPAUDIT_POLICY, else hpaudit.toml or "
        "pyproject.toml \\[tool.hpaudit] from the working directory upwards.",
        show_default=False,
    ),
    output: OutputFormat = typer.Option(OutputFormat.text, "--format", help="text or json."),
) -> None:
    """Validate a lab policy file: every problem with its key path and a hint (exit 2).

    A valid file prints a summary (exit 0). The file: on_exceed = "prune" | "stop" | "warn";
    \\[defaults] region (or g_per_kwh), pue, usd_per_kwh, cloud_usd_per_gpu_hour;
    \\[caps.study] (whole life), \\[caps.project] and \\[caps.user] (per calendar month,
    UTC), \\[caps.projects.NAME], \\[caps.users.NAME], \\[caps.studies.NAME], each with
    co2e_kg, energy_kwh, usd and/or gpu_hours (or one string such as "50 kg CO2e");
    \\[reporting] seeds, sensitivity, variance. Unknown keys are errors.
    """
    from hpsearch_budget.policy import InvalidPolicyError, find_policy, load_policy, read_policy

    try:
        path = file if file is not None else find_policy()
        if path is None:
            fail(
                "no policy file found: create hpaudit.toml (or a [tool.hpaudit] table in "
                "pyproject.toml) here or in a parent folder, set $HPAUDIT_POLICY, or pass FILE"
            )
            return
        # Found, not given: load_policy says when $HPAUDIT_POLICY names a missing file.
        policy = read_policy(path) if file is not None else load_policy()
    except InvalidPolicyError as exc:
        if output == OutputFormat.json:  # the problems as data too, for scripts and CI checks
            print_json({"valid": False, "file": exc.origin, "problems": _problems(exc)})
        for line in exc.lines():
            print(line, file=sys.stderr)
        n = len(exc.problems)
        fail(
            f"{exc.origin}: {n} problem{'s' if n != 1 else ''}; fix {'them' if n > 1 else 'it'}"
            " and run `hpaudit policy check` again"
        )
        return
    if output == OutputFormat.json:
        print_json({"valid": True, **policy.summary()})
    else:
        print("\n".join(summary_lines(policy)))


def _problems(exc: Any) -> list[dict[str, str]]:
    return [{"path": p.path, "message": p.message, "hint": p.hint} for p in exc.problems]


def register(app: typer.Typer) -> None:
    """Add ``hpaudit policy check``."""
    group = typer.Typer(
        help="Lab policy files: caps that every sweep respects.", no_args_is_help=True
    )
    group.command("check")(check)
    app.add_typer(group, name="policy")

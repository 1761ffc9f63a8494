"""The top-level API and the CLI shell: every exported name resolves, errors are one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hpsearch_budget


def test_every_exported_name_resolves() -> None:
    exported = set(hpsearch_budget.__all__) - {"__version__"}
    assert exported == set(hpsearch_budget._EXPORTS)
    for name in exported:
        assert getattr(hpsearch_budget, name) is not None


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = hpsearch_budget.no_such_name  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["estimate", "--no-such-option"],
        ["estimate", "--power-w", "100", "--hours", "1", "--format", "xml"],
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch_budget", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hpaudit: error:")
    assert "Traceback" not in proc.stderr


def test_no_arguments_prints_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch_budget"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert "Usage" in proc.stdout and "estimate" in proc.stdout


def test_a_group_without_a_subcommand_prints_its_help() -> None:
    # On click < 8.2 (typer 0.16 accepts it) the CLI did not import: it named
    # NoArgsIsHelpError, which click only has from 8.2.
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch_budget", "ledger"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: hpaudit ledger" in proc.stdout and "studies" in proc.stdout and not proc.stderr

"""Review R1 regression: a command group without a subcommand shows its help, no empty error."""

from __future__ import annotations

import pytest

from hpsearch_budget.cli import main


@pytest.mark.parametrize("group", ["ledger", "budget", "policy"])
def test_group_without_subcommand_shows_help(
    capsys: pytest.CaptureFixture[str], group: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([group])
    out, err = capsys.readouterr()
    assert exc.value.code == 0
    assert err == ""  # was "hpaudit: error: " with nothing after it
    assert f"hpaudit {group}" in out and "COMMAND" in out


def test_version_prints_the_installed_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["version"])
    assert exc.value.code in (0, None)
    assert capsys.readouterr().out.strip() == version("hpsearch_budget")

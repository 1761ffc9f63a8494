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

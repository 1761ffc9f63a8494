"""Review R1 regression: `budget status` on an empty ledger with caps that name nobody."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch_budget.cli import main
from hpsearch_budget.ledger import Ledger


def test_empty_ledger_with_default_caps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "hpaudit.toml"
    policy.write_text("[caps.project]\nco2e_kg = 50\n")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger(url).close()
    with pytest.raises(SystemExit) as exc:
        main(["budget", "status", "--policy", str(policy), "--ledger", url])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "no caps" not in out  # the policy has a cap; it just names nobody yet
    assert "nothing to show" in out and "--project" in out
    with pytest.raises(SystemExit) as exc:
        main(["budget", "status", "--policy", str(policy), "--ledger", url, "--project", "p"])
    assert exc.value.code == 0
    assert "project 'p' monthly CO2e cap" in capsys.readouterr().out

"""The lab-wide ledger experiment runs end to end in its quick mode (figures:
experiments/results/ledger_scale.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_ledger_scale_quick(run_quick: Callable[..., Any]) -> None:
    result = run_quick("ledger_scale.py")["sqlite"]
    assert result["build"]["rows"] == 120
    assert result["cli"] and all(c["exit"] == 0 and c["peak_mib"] > 0 for c in result["cli"])
    assert {h["what"] for h in result["hot"]} >= {"spent(project-month)"}
    for key in ("sweep_empty", "sweep_big"):
        assert result[key]["trials"] == 10 and result[key]["ledger_ms_median_trial"] > 0

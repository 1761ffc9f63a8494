"""Fixtures for the ledger tests: the same test on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty ledger database URL on each backend (PostgreSQL skips without a server)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def run_quick(tmp_path: Path) -> Callable[..., Any]:
    """Run ``experiments/<script> --quick [args]`` end to end; the JSON it wrote to --out.
    Without HPAUDIT_TEST_PG_URL and HPAUDIT_LEDGER: SQLite only, in a fresh file, unless a
    test passes a PostgreSQL URL itself."""

    def run(script: str, *args: str, timeout: float = 300) -> Any:
        out = tmp_path / f"{script}.json"
        env = {k: v for k, v in os.environ.items()
               if k not in ("HPAUDIT_TEST_PG_URL", "HPAUDIT_LEDGER")}  # fmt: skip
        cmd = [sys.executable, str(_REPO / "experiments" / script), "--quick", *args]
        subprocess.run([*cmd, "--out", str(out)], check=True, env=env, timeout=timeout,
                       capture_output=True)  # fmt: skip
        return json.loads(out.read_text())

    return run

"""The ledger benchmark runs end to end in its quick mode (figures: experiments/results/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_ledger_quick(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ}
    env.pop("HPAUDIT_TEST_PG_URL", None)  # SQLite only here; the PostgreSQL path has its tests
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / "bench_ledger.py"), "--quick", "--out",
         str(out)],
        check=True, env=env, timeout=120, capture_output=True,
    )  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert {(r["writers"], r["checkpoints_per_row"]) for r in results} == {
        (1, 0),
        (2, 0),
        (1, 1),
        (2, 1),
    }
    assert all(r["rows_per_s"] > 0 and r["rows"] == 5 * r["writers"] for r in results)

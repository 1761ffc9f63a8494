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


def test_bench_ledger_quick_postgresql_with_floor(pg_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / "bench_ledger.py"), "--quick", "--floor",
         "--checkpoints", "0", "--pg-url", pg_url, "--out", str(out)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    results = json.loads(out.read_text())["results"]
    backends = {r["backend"] for r in results}
    assert backends == {"sqlite", "postgresql", "pg floor (bare psycopg)"}
    floor = [r for r in results if r["backend"].startswith("pg floor")]
    assert sorted(r["writers"] for r in floor) == [1, 2]
    assert all(r["rows_per_s"] > 0 and r["server_cpu_ms_per_row"] is not None for r in floor)

"""The ledger benchmark runs end to end in its quick mode (figures: experiments/results/)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_bench_ledger_quick(run_quick: Callable[..., Any]) -> None:
    # SQLite only here; the PostgreSQL path has its tests
    results = run_quick("bench_ledger.py", timeout=120)["results"]
    assert {(r["writers"], r["checkpoints_per_row"]) for r in results} == {
        (1, 0),
        (2, 0),
        (1, 1),
        (2, 1),
    }
    assert all(r["rows_per_s"] > 0 and r["rows"] == 5 * r["writers"] for r in results)


def test_bench_ledger_quick_postgresql_with_floor(
    pg_url: str, run_quick: Callable[..., Any]
) -> None:
    args = ("--floor", "--checkpoints", "0", "--pg-url", pg_url)
    results = run_quick("bench_ledger.py", *args)["results"]
    backends = {r["backend"] for r in results}
    assert backends == {"sqlite", "postgresql", "pg floor (bare psycopg)"}
    floor = [r for r in results if r["backend"].startswith("pg floor")]
    assert sorted(r["writers"] for r in floor) == [1, 2]
    assert all(r["rows_per_s"] > 0 and r["server_cpu_ms_per_row"] is not None for r in floor)

"""Fixtures shared by every test area. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHDATA = REPO.parent / "shared" / "benchdata"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs PostgreSQL ``postgres`` (``-m "not postgres"`` deselects
    them): those using ``pg_url`` and those parametrised over a "postgres" backend."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "pg_url" in getattr(item, "fixturenames", ()) or "postgres" in params.values():
            item.add_marker(pytest.mark.postgres)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file URL in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the server named by HPAUDIT_TEST_PG_URL (.ci/run starts
    one); skipped with the reason when no server is configured."""
    base = os.environ.get("HPAUDIT_TEST_PG_URL")
    if not base:
        pytest.skip("no PostgreSQL server: set HPAUDIT_TEST_PG_URL (.ci/run starts one)")
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
    name = f"hpaudit_test_{uuid.uuid4().hex[:12]}"
    # Pre-ping: a test may restart the server (tests/ledger/test_ledger_pg_reconnect.py).
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

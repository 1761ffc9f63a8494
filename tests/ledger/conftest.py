"""Fixtures for the ledger tests: the same test on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty ledger database URL on each backend (PostgreSQL skips without a server)."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")

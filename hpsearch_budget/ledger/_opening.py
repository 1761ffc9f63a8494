"""Opening a ledger database: creating its tables if asked, refusing what is not a ledger
this version can read (another application's database, a newer schema, a damaged one)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import _engine, _schema


def open_schema(engine: Engine, url: URL, *, create: bool, allow_other_tables: bool) -> None:
    """Make sure ``engine`` holds a ledger this version reads (creating one if ``create``)."""
    names = set(sa.inspect(engine).get_table_names())
    if _schema.meta.name not in names:
        if not create:
            raise LedgerError(f"{_engine.describe(url)} holds no hpaudit ledger; check the URL")
        _refuse_foreign(names, url, allow_other_tables)
        _create_schema(engine)
    _check_schema(engine, url)
    if create:  # a writer; readers (create=False) never write, not even an index
        add_indexes(engine)


def _refuse_foreign(names: set[str], url: URL, allow_other_tables: bool) -> None:
    """Refuse to add the ledger's tables to a database holding others, unless allowed."""
    others = sorted(names - _schema.TABLE_NAMES)
    if others and not allow_other_tables:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise LedgerError(
            f"{_engine.describe(url)} is not an hpaudit ledger (it holds tables "
            f"{shown}); point to a new file or database, or pass "
            "Ledger(..., allow_other_tables=True) to share it"
        )


def _create_schema(engine: Engine) -> None:
    """Create the ledger's tables and meta records; racing creators queue on the schema lock,
    and only the first writes the records."""
    if engine.dialect.name == "sqlite":
        _engine.enable_wal(engine)
    with _engine.write_txn(engine) as conn:
        _engine.lock_schema(conn)
        _schema.metadata.create_all(conn, checkfirst=True)
        have = conn.execute(sa.select(_schema.meta.c.key)).scalars().all()
        if "schema_version" not in have:
            conn.execute(
                _schema.meta.insert(),
                [
                    {"key": "schema_version", "value": str(_schema.SCHEMA_VERSION)},
                    {"key": "application", "value": _schema.APPLICATION},
                ],
            )


def _check_schema(engine: Engine, url: URL) -> None:
    """Refuse a ledger without a readable schema version, a newer one, or missing tables."""
    with _engine.read_txn(engine) as conn:
        meta = dict(conn.execute(sa.select(_schema.meta.c.key, _schema.meta.c.value)).all())
    where = _engine.describe(url)
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise LedgerError(
            f"{where} has an hpaudit_meta table without a valid schema_version; "
            "it is not a ledger this version can read"
        ) from None
    if version > _schema.SCHEMA_VERSION:
        raise LedgerError(
            f"ledger {where} has schema v{version}, written by a newer hpsearch_budget "
            f"(this one reads v{_schema.SCHEMA_VERSION}); "
            "upgrade: pip install -U hpsearch_budget"
        )
    missing = _schema.TABLE_NAMES - set(sa.inspect(engine).get_table_names())
    if missing:
        raise LedgerError(
            f"ledger {where} is damaged: table(s) {', '.join(sorted(missing))} missing; "
            "restore it from a backup"
        )


def add_indexes(engine: Engine) -> None:
    """Create the scope indexes (:data:`_schema.SCOPE_INDEXES`) a ledger made by an earlier
    version lacks: once, by its first writer of this version; racing writers queue on the
    schema lock and the later ones find them made."""
    have = {i["name"] for i in sa.inspect(engine).get_indexes(_schema.windows.name)}
    missing = [i for i in _schema.SCOPE_INDEXES if i.name not in have]
    if not missing:
        return
    with _engine.write_txn(engine) as conn:
        _engine.lock_schema(conn)
        for index in missing:
            index.create(conn, checkfirst=True)

"""A ledger's URL as a sweep records it for later readers (``hpaudit report``).

The Optuna integration stores it as the study user attribute :data:`STUDY_ATTR`; anyone who can
read the study can read it, so it carries no password, and an SQLite path is made absolute so
that a report run from another folder finds the same file.
"""

from __future__ import annotations

import os

from sqlalchemy.engine import URL, make_url

#: The study user attribute holding the URL of the ledger the sweep's trials are metered into.
STUDY_ATTR = "hpaudit_ledger"
#: The study user attribute holding the study name the ledger knows its trials under: the
#: Optuna study's own name when it was metered, which ``optuna.copy_study`` to a new name keeps.
STUDY_NAME_ATTR = "hpaudit_ledger_study"


def shareable_url(url: str) -> str:
    """``url`` without its password (in the user part or the query) and with an absolute
    SQLite path. A password is dropped, not masked: '***' would only fail to log in later."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        database = os.path.abspath(database)  # not resolve(): keep the user's symlinks
    bare = URL.create(
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=database,
        query={k: v for k, v in parsed.query.items() if k != "password"},
    )
    return bare.render_as_string(hide_password=False)

"""The ledger's tables (SQLAlchemy Core), its schema version, and the checks on opening.

Tables carry an ``hpaudit_`` prefix so a ledger can share a database with other tables (an
Optuna storage, say) when the user asks for it. Times are stored as Unix seconds (double
precision): portable across SQLite and PostgreSQL, exact through a round trip, and therefore
stable under the hash chain. JSON fields are stored as canonical JSON text for the same reason.
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)

#: Bumped whenever a table changes shape. A ledger written by a newer version is refused.
SCHEMA_VERSION = 1
APPLICATION = "hpsearch_budget ledger"

PHASES = ("tuning", "final", "seed", "idle", "other")
STATUSES = ("running", "complete", "pruned", "failed", "killed")
FINISHED = STATUSES[1:]

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_Id = BigInteger().with_variant(Integer, "sqlite")

meta = Table(
    "hpaudit_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

windows = Table(
    "hpaudit_windows",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("study", String(512), nullable=False),
    Column("trial_key", String(512), nullable=False),
    Column("trial_number", BigInteger),
    Column("phase", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("project", String(256)),
    Column("user_name", String(256)),  # "user" is reserved in PostgreSQL
    Column("host", String(256), nullable=False),
    Column("pid", BigInteger, nullable=False),
    Column("started_unix_s", Double, nullable=False),
    Column("updated_unix_s", Double, nullable=False),
    Column("ended_unix_s", Double),
    Column("checkpoint_interval_s", Double, nullable=False),
    Column("wall_s", Double, nullable=False),
    Column("step", BigInteger),
    Column("energy_j", Double, nullable=False),
    Column("energy_by_domain", Text, nullable=False),  # JSON {domain: J}
    Column("sources", Text, nullable=False),  # JSON {domain: source}
    Column("source", String(16)),  # weakest source of the domains
    Column("gpu_s", Double, nullable=False),
    Column("devices", Text, nullable=False),  # JSON [device, ...]
    Column("gpu_share", Double, nullable=False),
    Column("pue", Double, nullable=False),
    Column("g_per_kwh", Double, nullable=False),  # energy-weighted over the checkpoints
    Column("intensity_source", Text, nullable=False),
    Column("co2e_g", Double, nullable=False),
    Column("usd", Double, nullable=False),
    Column("params", Text, nullable=False),  # JSON {name: value}
    Column("value", Double),
    Column("values_json", Text),  # JSON [value, ...] for multi-objective studies
    Column("reserved_energy_j", Double, nullable=False),
    Column("reserved_co2e_g", Double, nullable=False),
    Column("reserved_usd", Double, nullable=False),
    Column("reserved_gpu_s", Double, nullable=False),
    # Bumped by every write to the row: a writer holding a cached copy updates only if the row
    # is still the revision it knows (optimistic concurrency; saves a SELECT per checkpoint).
    Column("rev", BigInteger, nullable=False),
    # The hash chain: set once, when the row is finalised.
    Column("seq", BigInteger),
    Column("prev_hash", String(64)),
    Column("row_hash", String(64)),
    # Running rows are looked up (reaping, open windows, sealed rows to link) by seq IS NULL:
    # a partial index holds only them, not every finished row as an index on status did, and
    # a finalisation that seals a row changes no indexed column, so PostgreSQL can update it
    # in place (HOT; fillfactor leaves the room). Ledgers made before keep their status index.
    Index(
        "ix_hpaudit_windows_unlinked",
        "id",
        postgresql_where=text("seq IS NULL"),
        sqlite_where=text("seq IS NULL"),
    ),
    Index("ix_hpaudit_windows_study_seq", "study", "seq", unique=True),
)
# A budget's or cap's sums, budget status and export --since/--until read the rows of one
# project or user in a time range, or of a time range: without these each read a whole lab
# ledger (PostgreSQL scanned the table at every trial start under a project cap). They change
# no table's shape, so the schema version stays: ledgers made before get them from their next
# writer (_opening.add_indexes), and an older version still reads and writes such a ledger.
SCOPE_INDEXES = (
    Index("ix_hpaudit_windows_project_started", windows.c.project, windows.c.started_unix_s),
    Index("ix_hpaudit_windows_user_started", windows.c.user_name, windows.c.started_unix_s),
    Index("ix_hpaudit_windows_started", windows.c.started_unix_s),
)
# Set on creation rather than by Table(postgresql_with=...), which SQLAlchemy 2.0 refuses (2.1
# added it); the new table is still empty, so it is the same as a WITH clause in its CREATE.
event.listen(
    windows,
    "after_create",
    DDL("ALTER TABLE hpaudit_windows SET (fillfactor = 80)").execute_if(dialect="postgresql"),
)

# The last link of each study's chain, written in the same transaction as the row, so that
# deleting the newest finished rows is detected too.
chain_heads = Table(
    "hpaudit_chain_heads",
    metadata,
    Column("study", String(512), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
)

TABLE_NAMES = frozenset(metadata.tables)

"""A lab-wide ledger (hundreds of studies, months of rows): readers and budget checks read
the rows they need, not the whole ledger (figures: experiments/results/ledger_scale.md).

Asserted on behaviour, never on a timing: the query plan of a scope's sums, how many rows a
budget check reads, what a reader holds in memory at once.
"""

from __future__ import annotations

import sqlite3
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope, _schema
from hpsearch_budget.ledger._sqlite import SqliteSums, sqlite_sums, sqlite_write
from hpsearch_budget.ledger._statements import sums_statement
from hpsearch_budget.meters import Measurement, Source

_SRC = {"cpu": Source.REPLAYED}
_EST = {"cpu": Source.ESTIMATED}
_SCOPE_INDEXES = {
    "ix_hpaudit_windows_project_started",
    "ix_hpaudit_windows_user_started",
    "ix_hpaudit_windows_started",
}


def _fill(ledger: Ledger, study: str, n: int, *, project: str = "p", user: str = "u",
          sources: dict[str, Source] = _SRC) -> None:  # fmt: skip
    for i in range(n):
        w = ledger.open_window(study, f"{study}:{i}", project=project, user=user)
        ledger.finalize(w, Measurement(1.0, {"cpu": 10.0 + i}, sources), status="complete")


def _month() -> tuple[datetime, datetime]:
    since = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return since, since + timedelta(days=32)


@pytest.mark.parametrize(
    ("scope", "index"),
    [
        (
            lambda m: Scope(project="p", since=m[0], until=m[1]),
            "ix_hpaudit_windows_project_started",
        ),
        (lambda m: Scope(user="u", since=m[0], until=m[1]), "ix_hpaudit_windows_user_started"),
    ],
)
def test_a_new_process_sums_a_cap_scope_through_its_index(
    sqlite_url: str, scope: object, index: str
) -> None:
    # A worker's first budget check of a project's or user's month walked every row of the
    # ledger (the id range above 0); a Ray trial's process makes that check at its start.
    ledger = Ledger(sqlite_url)
    _fill(ledger, "s", 5)
    cap = scope(_month())  # type: ignore[operator]
    seen: list[str] = []
    with sqlite_write(ledger._engine) as db:
        db.set_trace_callback(seen.append)
        spent, _ = SqliteSums().read(db, cap, time.time())  # a new process: nothing cached
        db.set_trace_callback(None)
        plans = [
            str(db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
            for sql in seen
            if sql.startswith("SELECT") and "FROM hpaudit_windows" in sql
        ]
    ledger.close()
    assert spent.energy_j == pytest.approx(sum(10.0 + i for i in range(5)))
    assert any(index in p for p in plans), plans


def test_a_scope_whose_rows_are_not_the_newest_is_not_walked_again(sqlite_url: str) -> None:
    # A study (or project) whose last row is older than other studies' rows: each read walked
    # every row written after it, a whole-ledger scan per read for an old study.
    ledger = Ledger(sqlite_url)
    _fill(ledger, "old", 3)
    _fill(ledger, "other", 40)
    cache = SqliteSums()
    with sqlite_write(ledger._engine) as db:
        cache.read(db, Scope(study="old"), time.time())
        counting = _Counting(db)
        spent, _ = cache.read(counting, Scope(study="old"), time.time())  # type: ignore[arg-type]
    assert spent.energy_j == pytest.approx(33.0)
    assert counting.walked == 0, "the other study's 40 rows were walked again"
    _fill(ledger, "old", 1)  # a new row of the scope is still counted
    with sqlite_write(ledger._engine) as db:
        got = cache.read(db, Scope(study="old"), time.time())[0]
        full = sqlite_sums(db, Scope(study="old"), time.time())[0]
    assert got.energy_j == pytest.approx(full.energy_j) == pytest.approx(43.0)
    ledger.close()


class _Counting:
    """A sqlite3 connection that counts the rows its scope queries walk above the mark."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.walked = db, 0

    def execute(self, sql: str, params: object = ()) -> sqlite3.Cursor:
        if "id > :low" in sql:
            # Every row of the walked id range, whatever the scope (what the walk visits).
            n = self.db.execute(
                "SELECT count(*) FROM hpaudit_windows WHERE id > :low", params
            ).fetchone()[0]
            self.walked += int(n)
        return self.db.execute(sql, params)  # type: ignore[arg-type]


def test_a_writer_adds_the_scope_indexes_to_an_older_ledger(sqlite_url: str) -> None:
    with Ledger(sqlite_url) as ledger:
        _fill(ledger, "s", 2)
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:  # a ledger as an earlier version made it
        for name in _SCOPE_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX {name}")

    def indexes() -> set[str]:
        return {i["name"] for i in sa.inspect(engine).get_indexes("hpaudit_windows")}

    Ledger(sqlite_url, create=False).close()
    assert not indexes() & _SCOPE_INDEXES  # a reader writes nothing, not even an index
    with Ledger(sqlite_url) as ledger:
        assert ledger.verify().ok and ledger.spent().energy_j == pytest.approx(21.0)
    assert indexes() >= _SCOPE_INDEXES
    with engine.connect() as conn:  # no new table shape: older versions still open it
        version = conn.exec_driver_sql(
            "SELECT value FROM hpaudit_meta WHERE key = 'schema_version'"
        ).scalar_one()
    assert int(version) == _schema.SCHEMA_VERSION == 1
    engine.dispose()


def test_postgresql_sums_of_a_project_month_use_an_index(pg_url: str) -> None:
    # PostgreSQL sums a cap's scope in one statement at every trial start: without an index
    # on the project and time, a sequential scan of the whole ledger.
    with Ledger(pg_url) as ledger:
        _fill(ledger, "s", 3)
    since, until = _month()
    stmt, params = sums_statement(Scope(project="p", since=since, until=until))
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: force the choice
        compiled = stmt.compile(engine)
        plan = conn.exec_driver_sql(
            f"EXPLAIN {compiled}", {**compiled.params, **params, "now": time.time()}
        ).scalars()
        text = "\n".join(plan)
    engine.dispose()
    # Which scope index the planner prefers on a tiny table varies; none at all: Seq Scan.
    assert "Seq Scan" not in text and any(f"using {i} " in text for i in _SCOPE_INDEXES), text


def test_entries_newest_reads_only_the_last_rows(ledger_url: str) -> None:
    with Ledger(ledger_url) as ledger:
        _fill(ledger, "a", 4)
        _fill(ledger, "b", 3)
        every = ledger.entries()
        last = ledger.entries(newest=5)
        assert list(last.id) == list(every.id.tail(5))  # oldest first, as entries()
        assert list(ledger.entries("a", newest=2).trial_key) == ["a:2", "a:3"]
        assert list(last.columns) == list(every.columns)
        for bad in (0, -1, 2.5, True):
            with pytest.raises(HpauditInputError, match="newest must be a whole number"):
                ledger.entries(newest=bad)  # type: ignore[arg-type]


def test_study_totals_sum_in_sql_what_spent_and_entries_say(ledger_url: str) -> None:
    with Ledger(ledger_url) as ledger:
        _fill(ledger, "b", 3)
        _fill(ledger, "a", 2, sources=_EST)
        ledger.open_window("b", "b:running")
        totals = ledger.study_totals()
        assert [t.study for t in totals] == ledger.studies() == ["a", "b"]
        for t in totals:
            frame = ledger.entries(t.study)
            assert t.windows == len(frame)
            assert t.cost == ledger.spent(Scope(study=t.study))
            assert t.estimated == bool((frame.source == "estimated").any())
        assert [t.estimated for t in totals] == [True, False]


def test_verify_holds_one_study_in_memory_at_a_time(sqlite_url: str) -> None:
    # verify read every finished row of the ledger into memory at once (1 GB at 300,000).
    with Ledger(sqlite_url) as ledger:
        for s in range(16):
            _fill(ledger, f"s{s}", 150)
        ledger.close()
        engine = sa.create_engine(sqlite_url)
        tracemalloc.start()
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(_schema.windows)).mappings()]
        whole = tracemalloc.get_traced_memory()[0]
        del rows
        tracemalloc.stop()
        engine.dispose()
        ledger.verify()  # once untraced: statement caches and lazy imports are not rows
        tracemalloc.start()
        report = ledger.verify()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert report.ok and report.rows == 2400 and report.studies == 16
    # a study and one fetch of rows, not all sixteen studies
    assert peak < whole / 2, (peak, whole)

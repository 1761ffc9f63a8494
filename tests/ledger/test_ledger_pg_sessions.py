"""PostgreSQL: per-thread held connections and the chain lock tried by the sealing statement.

A finalisation seals its row and tries the study's chain lock in one statement; a writer that
finds the lock taken leaves its row sealed for the holder, the study's next finalisation, or
its own ``close()``. Each thread keeps its own connection for these statements (the chain lock
is per session), a forked child opens its own, and a connection the server dropped is opened
again.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import threading

import pytest
import sqlalchemy as sa

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import Ledger, Scope, _engine, _pg
from hpsearch_budget.meters import Measurement

pytestmark = pytest.mark.postgres


def _finish(ledger: Ledger, study: str, key: str) -> int:
    w = ledger.open_window(study, key)
    ledger.finalize(w, Measurement(1.0, {"cpu": 5.0}), status="complete")
    return w


def _linked(url: str, study: str) -> tuple[int, int]:
    """(rows, rows linked into the chain) of ``study``, as another process sees them."""
    with Ledger(url, create=False) as reader:
        frame = reader.entries(study=study)
    return len(frame), int(frame.seq.notna().sum())


def test_a_row_sealed_while_another_session_holds_the_chain_lock_is_linked_later(
    pg_url: str,
) -> None:
    ledger = Ledger(pg_url)
    first = _finish(ledger, "s", "s:0")
    engine = sa.create_engine(pg_url)
    a, b = _engine.chain_lock_key("s")
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:a, :b)"), {"a": a, "b": b})
        _finish(ledger, "s", "s:1")  # does not wait for the lock: its row stays sealed
        assert _linked(pg_url, "s") == (2, 1)
        with Ledger(pg_url, create=False) as reader:
            report = reader.verify()
        assert report.ok and report.pending == 1
        holder.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"), {"a": a, "b": b})
    engine.dispose()
    ledger.close()  # the writer makes sure its own sealed row is linked
    assert _linked(pg_url, "s") == (2, 2)
    with Ledger(pg_url, create=False) as reader:
        report = reader.verify()
        frame = reader.entries(study="s")
    assert report.ok and report.pending == 0 and report.rows == 2
    assert int(frame.loc[frame.id == first, "seq"].iloc[0]) == 1


def test_threads_sharing_one_ledger_keep_every_chain_valid(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(40):
                _finish(ledger, "s", f"s:{k}:{i}")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ledger.close()
    assert _linked(pg_url, "s") == (160, 160)
    with Ledger(pg_url, create=False) as reader:
        report = reader.verify()
        seqs = sorted(int(s) for s in reader.entries(study="s").seq)
    assert report.ok and report.rows == 160 and seqs == list(range(1, 161))


def _child(ledger: Ledger, done: mp.Queue) -> None:  # type: ignore[type-arg]
    for i in range(10):
        _finish(ledger, "s", f"child:{i}")
    ledger.close()
    done.put("ok")


def test_a_forked_child_writes_through_its_own_connections(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    _finish(ledger, "s", "parent:0")  # the parent now holds connections
    ctx = mp.get_context("fork")
    done = ctx.Queue()
    child = ctx.Process(target=_child, args=(ledger, done))
    child.start()
    for i in range(1, 11):
        _finish(ledger, "s", f"parent:{i}")
    assert done.get(timeout=60) == "ok"
    child.join(timeout=60)
    assert child.exitcode == 0
    for i in range(11, 13):  # the child's exit left the parent's sessions alone
        _finish(ledger, "s", f"parent:{i}")
    ledger.close()
    assert _linked(pg_url, "s") == (23, 23)
    assert Ledger(pg_url, create=False).verify().ok


def test_a_connection_the_server_dropped_costs_no_error(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    _finish(ledger, "s", "s:0")
    engine = sa.create_engine(pg_url)
    with engine.connect() as admin:  # e.g. a server restart or an idle-session timeout
        admin.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    engine.dispose()
    # it once failed one call per held connection (open, finalize) with "lost the connection":
    # the calls reconnect now (more in test_ledger_pg_reconnect.py)
    for i in range(1, 4):
        _finish(ledger, "s", f"s:{i}")
    ledger.close()
    with Ledger(pg_url, create=False) as reader:
        frame = reader.entries(study="s")
        assert reader.verify().ok
    assert len(frame) == 4 and (frame.status == "complete").all()


def test_the_seal_commits_durably_on_the_fast_session(pg_url: str) -> None:
    """Openings and checkpoints share a session without synchronous commit; the sealing
    statement turns it on for its own transaction, so a finished row survives a server crash."""
    ledger = Ledger(pg_url)
    w = ledger.open_window("s", "s:0")
    with ledger._held.session() as conn:  # the session the hot writes use
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        driver = conn.connection.driver_connection
        row = ledger._cache[w]
        new = {**row, "status": "complete", "rev": row["rev"] + 1}
        params = {"w_id": w, "w_rev": row["rev"], **{f"v_{c}": new[c] for c in ("status", "rev")}}
        driver.execute("BEGIN")  # keep the statement's transaction open to look inside it
        try:
            written, locked = _pg.seal_running(conn, ("status", "rev"), params, "s")
            assert (written, locked) == (1, True)
            inside = driver.execute("SHOW synchronous_commit").fetchone()[0]
        finally:
            driver.execute("ROLLBACK")
        assert inside == "on"
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
        driver.execute("SELECT pg_advisory_unlock_all()")
    ledger.close()


def test_the_prepared_fast_path_round_trips_values_exactly(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    params = {"name": "café ☕ 'quoted' $1 %s", "lr": 1e-300, "big": 2**62}
    w = ledger.open_window("s", "s:ünï", trial_number=2**40, params=params)
    energy = 0.1 + 0.2  # not exactly representable in decimal: must come back bit-equal
    ledger.finalize(w, Measurement(1.5, {"cpu": energy}), status="complete", value=-1e-308)
    ledger.close()
    with Ledger(pg_url, create=False) as reader:
        row = reader.entries(study="s").iloc[0]
    assert row.trial_key == "s:ünï" and int(row.trial_number) == 2**40
    assert row.params == params and row.value == -1e-308 and row.energy_j == energy
    assert Ledger(pg_url, create=False).verify().ok


def test_a_statement_the_server_refuses_costs_one_error_then_writes_go_on(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    _finish(ledger, "s", "s:0")  # the fast path's statements are prepared on this connection
    engine = sa.create_engine(pg_url)
    with engine.begin() as admin:
        admin.execute(
            sa.text("ALTER TABLE hpaudit_windows ADD CONSTRAINT no_bad CHECK (trial_key <> 'bad')")
        )
    engine.dispose()
    with pytest.raises(LedgerError, match="no_bad") as caught:
        ledger.open_window("s", "bad")
    assert "\n" not in str(caught.value)
    _finish(ledger, "s", "s:1")  # a fresh connection, its statements prepared again
    ledger.close()
    assert _linked(pg_url, "s") == (2, 2)


_EXIT_WITHOUT_CLOSE = """
import sys
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement
ledger = Ledger(sys.argv[1])
w = ledger.open_window("s", "s:child")
ledger.finalize(w, Measurement(1.0, {"cpu": 5.0}), status="complete")
print(len(ledger._unlinked), flush=True)  # 1: the chain lock was taken, the row is sealed
sys.stdin.readline()  # the test releases the lock, then lets this worker end
"""


def test_a_worker_that_exits_without_close_links_what_it_left(pg_url: str) -> None:
    """A worker that just ends (no Ledger.close(), as Optuna and Ray workers do) links its
    sealed rows at interpreter exit, so a sweep's last rows are not left sealed."""
    import subprocess
    import sys

    engine = sa.create_engine(pg_url)
    a, b = _engine.chain_lock_key("s")
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:a, :b)"), {"a": a, "b": b})
        child = subprocess.Popen(
            [sys.executable, "-c", _EXIT_WITHOUT_CLOSE, pg_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        assert child.stdout.readline().strip() == "1"
        assert _linked(pg_url, "s") == (1, 0)  # sealed, waiting for its link
        holder.execute(sa.text("SELECT pg_advisory_unlock(:a, :b)"), {"a": a, "b": b})
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    engine.dispose()
    assert _linked(pg_url, "s") == (1, 1)


def test_reservations_stay_durable_where_the_database_turns_synchronous_commit_off(
    pg_url: str,
) -> None:
    # A DBA may set synchronous_commit = off for a sweep database (Optuna's throughput). The
    # durable engine (reservations, reaps, schema) inherited it: a reservation lost in a
    # server crash frees room another worker may take.
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        name = sa.engine.make_url(pg_url).database
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    admin.dispose()
    ledger = Ledger(pg_url)
    with _engine.write_txn(ledger._engine) as conn:  # what try_reserve and reserve= run in
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    with ledger._held.session() as conn:  # openings and checkpoints may still skip the flush
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
    limits = [
        (Scope(study="s"), Cost(energy_j=10.0, co2e_g=math.inf, usd=math.inf, gpu_s=math.inf))
    ]
    _, reserved = ledger.open_window("s", "s:0", reserve=(Cost(energy_j=5.0), limits))
    assert reserved
    ledger.close()


def test_a_new_ledger_leaves_room_in_its_pages_for_in_place_updates(pg_url: str) -> None:
    # Finalisations update a row without touching an indexed column; free room in its page
    # (fillfactor) lets PostgreSQL do it in place. Set after CREATE: SQLAlchemy 2.0 refused
    # Table(postgresql_with=...) and the package did not import.
    Ledger(pg_url).close()
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        options = conn.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'hpaudit_windows'"
        ).scalar()
    engine.dispose()
    assert options == ["fillfactor=80"]

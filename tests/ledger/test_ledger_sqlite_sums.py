"""SQLite: the budget check reads spent and committed incrementally, and always gets what a
full sum over the rows gets.

Opening a window with a reservation checks spent + committed of every limited scope. Summing
all of a study's rows each time grew with the study; ``SqliteSums`` keeps the rows below the
oldest running one summed and reads only the rest. Two ledgers on one file (two workers)
interleave opening, checkpointing, finishing and being reaped; after every step the cached
figures must equal a fresh full sum, for study, project and time-window scopes.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest

from hpsearch_budget.budget import Cost
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.ledger._sqlite import SqliteSums, sqlite_sums, sqlite_write
from hpsearch_budget.meters import Measurement, Source

_SRC = {"cpu": Source.REPLAYED}


def _close(a: Cost, b: Cost) -> bool:
    pairs = zip(
        (a.energy_j, a.co2e_g, a.usd, a.gpu_s), (b.energy_j, b.co2e_g, b.usd, b.gpu_s), strict=True
    )
    return all(x == pytest.approx(y, rel=1e-9, abs=1e-9) for x, y in pairs)


def test_incremental_sums_equal_full_sums_through_a_mixed_history(sqlite_url: str) -> None:
    rng = random.Random(3)
    workers = [Ledger(sqlite_url), Ledger(sqlite_url)]
    caches = [SqliteSums(), SqliteSums()]
    start = datetime.fromtimestamp(time.time() - 5, UTC)
    scopes = [
        Scope(study="a"),
        Scope(study="b"),
        Scope(project="p"),
        Scope(since=start),
        Scope(study="a", until=datetime.fromtimestamp(time.time() + 3600, UTC)),
        Scope(),
    ]
    limits = [(Scope(study="a"), Cost(co2e_g=1e12))]
    running: list[tuple[int, int, float]] = []  # (worker, window, energy so far)
    for step in range(300):
        k = rng.randrange(2)
        ledger = workers[k]
        action = rng.random()
        if action < 0.4 or not running:
            study = rng.choice("ab")
            w, _ = ledger.open_window(
                study,
                f"{study}:{step}",
                project=rng.choice(["p", "q"]),
                checkpoint_interval_s=rng.choice([0.01, 30.0]),  # some look dead soon
                reserve=(Cost(energy_j=50.0, co2e_g=rng.random()), limits),
            )
            running.append((k, w, 0.0))
        elif action < 0.7:
            i = rng.randrange(len(running))
            owner, w, energy = running[i]
            energy += rng.random() * 20
            workers[owner].checkpoint(w, Measurement(1.0, {"cpu": energy}, _SRC))
            running[i] = (owner, w, energy)
        elif action < 0.95:
            owner, w, energy = running.pop(rng.randrange(len(running)))
            status = rng.choice(["complete", "pruned", "failed"])
            workers[owner].finalize(w, Measurement(1.0, {"cpu": energy + 1}, _SRC), status=status)
        else:
            ledger.reap()  # windows silent for 3 short intervals become killed
            gone = {int(i) for i in ledger.entries(open_only=True).id}
            running = [r for r in running if r[1] in gone]
        now = time.time()
        with sqlite_write(ledger._engine) as db:
            for scope in scopes:
                full = sqlite_sums(db, scope, now)
                got = caches[k].read(db, scope, now)
                assert _close(got[0], full[0]) and _close(got[1], full[1]), (step, scope)
        for scope in scopes:  # the public reads (their own transaction, the ledger's cache)
            with sqlite_write(ledger._engine) as db:
                full_spent = sqlite_sums(db, scope, time.time())[0]
            assert _close(ledger.spent(scope), full_spent), (step, scope)
    for ledger in workers:
        ledger.close()


def test_a_running_row_holds_the_mark_until_it_finishes(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    cache = SqliteSums()
    old = ledger.open_window("s", "s:old")
    for i in range(5):
        w = ledger.open_window("s", f"s:{i}")
        ledger.finalize(w, Measurement(1.0, {"cpu": 10.0}, _SRC), status="complete")
    with sqlite_write(ledger._engine) as db:
        assert cache.read(db, Scope(study="s"), time.time())[0].energy_j == pytest.approx(50.0)
    assert cache._marks[(("s_study", "s"),)][0] < old + 1  # nothing at or above it is kept
    ledger.finalize(old, Measurement(1.0, {"cpu": 7.0}, _SRC), status="complete")
    with sqlite_write(ledger._engine) as db:
        assert cache.read(db, Scope(study="s"), time.time())[0].energy_j == pytest.approx(57.0)
    mark, kept = cache._marks[(("s_study", "s"),)]
    assert mark == old + 5 and kept[0] == pytest.approx(57.0)  # now every row is below it
    ledger.close()


class _Counting:
    """A sqlite3 connection that counts the rows its queries return."""

    def __init__(self, db: object) -> None:
        self.db, self.rows = db, 0

    def execute(self, sql: str, params: object) -> object:
        rows = self.db.execute(sql, params).fetchall()  # type: ignore[attr-defined]
        self.rows += len(rows)
        return _Fetched(rows)


class _Fetched:
    def __init__(self, rows: list[object]) -> None:
        self._rows = rows

    def fetchall(self) -> list[object]:
        return self._rows


def test_a_check_reads_only_the_rows_that_can_still_change(sqlite_url: str) -> None:
    ledger = Ledger(sqlite_url)
    limits = [(Scope(study="s"), Cost(co2e_g=1e12))]
    for i in range(300):  # the budget check at every opening goes through the cache
        w, _ = ledger.open_window("s", f"s:{i}", reserve=(Cost(co2e_g=1.0), limits))
        ledger.finalize(w, Measurement(1.0, {"cpu": 2.0}, _SRC), status="complete")
    running = ledger.open_window("s", "s:running")
    with sqlite_write(ledger._engine) as db:
        counting = _Counting(db)
        spent, _ = ledger._sqlite_sums.read(counting, Scope(study="s"), time.time())  # type: ignore[arg-type]
    assert spent.energy_j == pytest.approx(600.0)
    assert counting.rows <= 2  # the last finished row at most, and the running one
    ledger.finalize(running, Measurement(1.0, {"cpu": 1.0}, _SRC), status="complete")
    ledger.close()

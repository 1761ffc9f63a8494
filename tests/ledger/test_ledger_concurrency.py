"""Many writer processes on one ledger: no row lost, every chain valid, no budget overrun."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import threading
from typing import Any

import pytest

from hpsearch_budget.budget import Cost
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement

# The figure: 8 processes x 500 finished rows each. HPAUDIT_LEDGER_ROWS lowers it for a
# quick local run; CI runs the full size on both backends.
WRITERS = 8
ROWS = int(os.environ.get("HPAUDIT_LEDGER_ROWS", "500"))
CTX = mp.get_context("fork")  # the child inherits the imports: 8 workers start in milliseconds


def _writer(url: str, worker: int, rows: int, barrier: Any) -> None:
    ledger = Ledger(url)
    barrier.wait()
    for i in range(rows):
        # Two studies shared by all workers: the chain lock is contended.
        study = "shared-a" if i % 2 else "shared-b"
        w = ledger.open_window(study, f"{worker}:{i}", trial_number=i, params={"w": worker})
        if i % 10 == 0:
            ledger.checkpoint(w, Measurement(0.5, {"cpu": 0.5}))
        status = ("complete", "pruned", "failed")[i % 3]
        ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status=status, value=float(i))
    ledger.close()


def _run(target: Any, args_for: Any, n: int) -> None:
    barrier = CTX.Barrier(n)
    procs = [CTX.Process(target=target, args=(*args_for(k), barrier)) for k in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * n


@pytest.mark.slow
def test_eight_writers_lose_no_row_and_keep_every_chain_valid(ledger_url: str) -> None:
    Ledger(ledger_url).close()  # the schema exists before the race (creation races: below)
    _run(_writer, lambda k: (ledger_url, k, ROWS), WRITERS)
    ledger = Ledger(ledger_url)
    frame = ledger.entries()
    assert len(frame) == WRITERS * ROWS
    assert frame.trial_key.is_unique and (frame.status != "running").all()
    assert ledger.spent().energy_j == pytest.approx(WRITERS * ROWS * 1.0)
    for study, rows in frame.groupby("study"):
        assert sorted(rows.seq) == list(range(1, len(rows) + 1)), study
    report = ledger.verify()
    assert report.ok, report.summary()
    assert report.rows == WRITERS * ROWS and report.studies == 2


def _opener(url: str, barrier: Any) -> None:
    barrier.wait()
    ledger = Ledger(url)  # everyone creates the schema at once
    w = ledger.open_window("s", f"pid:{os.getpid()}")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")


def test_workers_racing_to_create_a_new_ledger(ledger_url: str) -> None:
    _run(_opener, lambda k: (ledger_url,), 4)
    ledger = Ledger(ledger_url)
    assert len(ledger.entries()) == 4 and ledger.verify().ok


LIMIT_J = 1000.0
ASK_J = 70.0  # 14 reservations fit, the 15th does not


def _reserver(url: str, worker: int, result: Any, barrier: Any) -> None:
    ledger = Ledger(url)
    limits = [(Scope(project="lab"), Cost(LIMIT_J, math.inf, math.inf, math.inf))]
    windows = [ledger.open_window("race", f"{worker}:{i}", project="lab") for i in range(6)]
    barrier.wait()
    granted = sum(ledger.try_reserve(w, Cost(energy_j=ASK_J), limits) for w in windows)
    result.put(granted)


def test_racing_reservations_never_jointly_exceed_the_limit(ledger_url: str) -> None:
    Ledger(ledger_url).close()
    results = CTX.Queue()
    _run(_reserver, lambda k: (ledger_url, k, results), 6)  # 36 asks for 14 slots
    granted = sum(results.get(timeout=10) for _ in range(6))
    assert granted == int(LIMIT_J // ASK_J) == 14
    ledger = Ledger(ledger_url)
    assert ledger.committed(Scope(project="lab")).energy_j == pytest.approx(14 * ASK_J)
    assert ledger.committed().energy_j <= LIMIT_J


def test_threads_sharing_one_ledger_object(ledger_url: str) -> None:
    # Optuna's n_jobs > 1 runs trials in threads of one process, all through one Ledger.
    ledger = Ledger(ledger_url)

    def trials(k: int) -> None:
        for i in range(25):
            w = ledger.open_window("threads", f"{k}:{i}")
            ledger.checkpoint(w, Measurement(0.5, {"cpu": 1.0}))
            ledger.finalize(w, Measurement(1.0, {"cpu": 2.0}), status="complete")

    threads = [threading.Thread(target=trials, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ledger.entries()) == 100 and ledger.spent().energy_j == 200.0
    assert ledger.verify().ok

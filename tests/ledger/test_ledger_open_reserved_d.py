"""open_window(reserve=): the first reservation taken in the INSERT's transaction, with
try_reserve's atomic check; finalize(step=): the last reported step written with the final row."""

from __future__ import annotations

import math
import multiprocessing as mp
from typing import Any

import pytest

from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Measurement

CTX = mp.get_context("fork")
LIMIT_J = 1000.0
ASK_J = 70.0  # 14 reservations fit, the 15th does not


def _energy_limit(j: float, scope: Scope | None = None) -> list[tuple[Scope, Cost]]:
    return [(scope or Scope(project="lab"), Cost(j, math.inf, math.inf, math.inf))]


def test_reserved_open_takes_the_reservation(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    w, ok = ledger.open_window(
        "s", "s:0", project="lab", reserve=(Cost(energy_j=ASK_J), _energy_limit(LIMIT_J))
    )
    assert ok
    row = ledger.entries().set_index("id").loc[w]
    assert row["status"] == "running" and row["reserved_energy_j"] == ASK_J
    assert ledger.committed(Scope(project="lab")).energy_j == ASK_J
    # The cached row carries the reservation: a checkpoint and the finalisation keep it
    # and release it as a try_reserve'd one.
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 30.0}))
    assert ledger.committed(Scope(project="lab")).energy_j == ASK_J - 30.0
    ledger.finalize(w, Measurement(2.0, {"cpu": 50.0}), status="complete")
    assert ledger.committed().energy_j == 0.0 and ledger.spent().energy_j == 50.0
    assert ledger.verify().ok


def test_reserved_open_that_does_not_fit_opens_the_row_unreserved(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    limits = _energy_limit(100.0)
    w0, ok0 = ledger.open_window("s", "s:0", project="lab", reserve=(Cost(energy_j=60.0), limits))
    w1, ok1 = ledger.open_window("s", "s:1", project="lab", reserve=(Cost(energy_j=60.0), limits))
    assert ok0 and not ok1
    rows = ledger.entries().set_index("id")
    assert rows.loc[w1, "status"] == "running" and rows.loc[w1, "reserved_energy_j"] == 0.0
    assert ledger.committed().energy_j == 60.0
    # The caller can wait for room and reserve later, as after a plain open.
    ledger.finalize(w0, Measurement(1.0, {"cpu": 10.0}), status="complete")
    assert ledger.try_reserve(w1, Cost(energy_j=60.0), limits)
    assert ledger.committed().energy_j == 60.0


def test_reserved_open_checks_every_limit(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    roomy = _energy_limit(LIMIT_J, Scope(study="s"))
    tight = [(Scope(user="ann"), Cost(math.inf, math.inf, 1e-9, math.inf))]
    _, ok = ledger.open_window(
        "s", "s:0", user="ann", reserve=(Cost(energy_j=1.0, usd=1.0), roomy + tight)
    )
    assert not ok and ledger.committed().energy_j == 0.0


@pytest.mark.parametrize(
    "reserve, message",
    [
        ((Cost(energy_j=1.0),), "reserve must be an"),
        ((Cost(energy_j=-1.0), []), "amount.energy_j"),
        ((Cost(energy_j=1.0), [("lab", Cost())]), "expected a Scope"),
        ((1.0, []), "amount must be a Cost"),
    ],
)
def test_bad_reserve_opens_nothing(sqlite_url: str, reserve: Any, message: str) -> None:
    ledger = Ledger(sqlite_url)
    with pytest.raises(HpauditInputError, match=message):
        ledger.open_window("s", "s:0", reserve=reserve)
    assert ledger.entries().empty


def _reserving_opener(url: str, worker: int, result: Any, barrier: Any) -> None:
    ledger = Ledger(url)
    barrier.wait()
    granted = 0
    for i in range(6):
        _, ok = ledger.open_window(
            "race",
            f"{worker}:{i}",
            project="lab",
            reserve=(Cost(energy_j=ASK_J), _energy_limit(LIMIT_J)),
        )
        granted += ok
    result.put(granted)


def test_racing_reserved_opens_never_jointly_exceed_the_limit(ledger_url: str) -> None:
    Ledger(ledger_url).close()
    results = CTX.Queue()
    barrier = CTX.Barrier(6)
    procs = [
        CTX.Process(target=_reserving_opener, args=(ledger_url, k, results, barrier))
        for k in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 6
    granted = sum(results.get(timeout=10) for _ in range(6))  # 36 asks for 14 slots
    assert granted == int(LIMIT_J // ASK_J) == 14
    ledger = Ledger(ledger_url)
    assert len(ledger.entries()) == 36
    assert ledger.committed(Scope(project="lab")).energy_j == pytest.approx(14 * ASK_J)


def test_finalize_writes_the_last_step(ledger_url: str) -> None:
    ledger = Ledger(ledger_url)
    w = ledger.open_window("s", "s:0")
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 1.0}), step=0, value=5.0)
    ledger.finalize(w, Measurement(2.0, {"cpu": 2.0}), status="pruned", step=3, value=2.0)
    kept = ledger.open_window("s", "s:1")
    ledger.checkpoint(kept, Measurement(1.0, {"cpu": 1.0}), step=4, value=7.0)
    ledger.finalize(kept, Measurement(2.0, {"cpu": 2.0}), status="pruned")  # step=None keeps it
    rows = ledger.entries().set_index("id")
    assert (rows.loc[w, "step"], rows.loc[w, "value"]) == (3, 2.0)
    assert (rows.loc[kept, "step"], rows.loc[kept, "value"]) == (4, 7.0)
    assert ledger.verify().ok  # the step is part of the hashed final row


def test_a_row_written_elsewhere_is_reread_not_overwritten(ledger_url: str) -> None:
    # The hot writes trust the row this object wrote last only while the database still holds
    # that revision: a row another process moved is re-read and charged from what it holds.
    mine, other = Ledger(ledger_url), Ledger(ledger_url)
    w = mine.open_window("s", "s:0")
    other.checkpoint(w, Measurement(1.0, {"cpu": 10.0}), step=0)
    mine.checkpoint(w, Measurement(2.0, {"cpu": 30.0}), step=1)
    other.checkpoint(w, Measurement(3.0, {"cpu": 40.0}), step=2)
    cost = mine.finalize(w, Measurement(4.0, {"cpu": 50.0}), status="complete", step=3)
    assert cost.energy_j == 50.0
    row = mine.entries().iloc[0]
    assert (row["energy_j"], row["step"], row["status"]) == (50.0, 3, "complete")
    assert mine.verify().ok


def test_a_window_reaped_elsewhere_cannot_be_finalised(ledger_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from hpsearch_budget.errors import LedgerError

    mine, other = Ledger(ledger_url), Ledger(ledger_url)
    w = mine.open_window("s", "s:0", checkpoint_interval_s=1.0)
    assert other.reap(now=datetime.now(UTC) + timedelta(seconds=10)) == 1
    with pytest.raises(LedgerError, match="already finalised as 'killed'"):
        mine.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")
    assert mine.entries().iloc[0]["status"] == "killed" and mine.verify().ok

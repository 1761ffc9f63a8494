"""PostgreSQL finalisations: seal durably, then link; a row left sealed is sound and linked later.

On PostgreSQL a finished row is committed *sealed* (no chain lock, so concurrent finalisations
share WAL flushes) and linked right after. These tests stop a writer between the two steps (the
link fails) and check what ``verify`` says and who links the row.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement

pytestmark = pytest.mark.postgres


def _finish(ledger: Ledger, study: str, key: str, energy_j: float = 5.0) -> int:
    w = ledger.open_window(study, key)
    ledger.finalize(w, Measurement(1.0, {"cpu": energy_j}), status="complete")
    return w


def _finish_unlinked(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, study: str, key: str) -> int:
    """Finalise a window whose link fails: the writer stops between seal and link."""
    w = ledger.open_window(study, key)

    def broken_link(*args: Any, **kwargs: Any) -> int:
        raise LedgerError("connection lost")

    with monkeypatch.context() as m:
        m.setattr(ledger, "_link_pass", broken_link)
        with pytest.raises(LedgerError, match="finalised and sealed"):
            ledger.finalize(w, Measurement(1.0, {"cpu": 7.0}), status="complete")
    return w


def _seqs(url: str, study: str) -> dict[int, int | None]:
    """Window id -> its place in the chain (None: not linked), as another process sees it."""
    with Ledger(url, create=False) as reader:
        frame = reader.entries(study=study)
    pairs = zip(frame.id, frame.seq, strict=True)
    return {int(i): (None if pd.isna(s) else int(s)) for i, s in pairs}


def test_finalize_leaves_the_row_linked(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ids = [_finish(ledger, "s", f"s:{i}") for i in range(3)]
    assert _seqs(pg_url, "s") == {ids[0]: 1, ids[1]: 2, ids[2]: 3}
    report = ledger.verify()
    assert report.ok and report.pending == 0 and report.rows == 3
    ledger.close()


def test_a_sealed_row_is_sound_and_the_next_finalisation_links_it(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(pg_url)
    first = _finish(ledger, "s", "s:0")
    stuck = _finish_unlinked(ledger, monkeypatch, "s", "s:1")
    assert _seqs(pg_url, "s") == {first: 1, stuck: None}
    with Ledger(pg_url, create=False) as reader:  # another process: sound, one row waiting
        report = reader.verify()
        assert report.ok and report.pending == 1 and report.rows == 2
        assert "1 sealed, awaiting their link" in report.summary()
        assert reader.spent().energy_j == pytest.approx(12.0)  # counted as spent meanwhile
    later = _finish(ledger, "s", "s:2")
    assert _seqs(pg_url, "s") == {first: 1, stuck: 2, later: 3}
    report = ledger.verify()
    assert report.ok and report.pending == 0 and report.rows == 3
    ledger.close()


def test_close_links_what_a_failed_link_left(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(pg_url)
    stuck = _finish_unlinked(ledger, monkeypatch, "s", "s:0")  # the study's first row
    assert _seqs(pg_url, "s") == {stuck: None}
    ledger.close()
    assert _seqs(pg_url, "s") == {stuck: 1}
    assert Ledger(pg_url).verify().ok


def test_an_edited_sealed_row_is_never_linked_and_is_named(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(pg_url)
    first = _finish(ledger, "s", "s:0")
    stuck = _finish_unlinked(ledger, monkeypatch, "s", "s:1")
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # edited while waiting for its link
        conn.execute(sa.text("UPDATE hpaudit_windows SET energy_j = 1 WHERE id = :i"), {"i": stuck})
    engine.dispose()
    later = _finish(ledger, "s", "s:2")  # links the sound rows, not the edited one
    assert _seqs(pg_url, "s") == {first: 1, stuck: None, later: 2}
    report = ledger.verify()
    first_problem = report.first
    assert not report.ok and first_problem is not None
    assert (first_problem.kind, first_problem.row_id) == ("inserted", stuck)
    ledger.close()


def test_an_inserted_row_with_a_forged_seal_field_is_named(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    _finish(ledger, "s", "s:0")
    w = ledger.open_window("s", "s:fake")
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # finished by hand, with a hash that is not its seal
        conn.execute(
            sa.text("UPDATE hpaudit_windows SET status = 'complete', row_hash = :h WHERE id = :i"),
            {"h": "f" * 64, "i": w},
        )
    engine.dispose()
    report = ledger.verify()
    assert report.first is not None and report.first.row_id == w and report.pending == 0
    ledger.close()

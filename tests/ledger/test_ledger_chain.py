"""The hash chain: raw-SQL edits, insertions and deletions are found and named."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import Ledger, _chain, _schema
from hpsearch_budget.ledger._chain import row_hash
from hpsearch_budget.meters import Measurement


def _ledger_with_rows(url: str, n: int = 5) -> tuple[Ledger, list[int]]:
    ledger = Ledger(url)
    ids = []
    for i in range(n):
        w = ledger.open_window("victim", f"victim:{i}", trial_number=i, params={"x": i})
        ledger.finalize(w, Measurement(1.0, {"cpu": 100.0 + i}), status="complete", value=i)
        ids.append(w)
    w = ledger.open_window("bystander", "bystander:0")
    ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")
    return ledger, ids


def _sql(url: str, statement: str, **params: object) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


def test_a_sound_ledger_verifies(ledger_url: str) -> None:
    ledger, _ = _ledger_with_rows(ledger_url)
    ledger.open_window("victim", "victim:running")  # running rows are not chained yet
    report = ledger.verify()
    assert report.ok and report.rows == 6 and report.studies == 2
    assert "sound" in report.summary()
    assert ledger.entries(study="victim").seq.tolist()[:5] == [1, 2, 3, 4, 5]


def test_an_edited_row_is_named(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(ledger_url, "UPDATE hpaudit_windows SET energy_j = 1 WHERE id = :i", i=ids[2])
    report = ledger.verify()
    assert not report.ok and len(report.problems) == 1  # the bystander study is sound
    first = report.first
    assert first is not None
    assert (first.study, first.kind, first.row_id, first.seq) == ("victim", "edited", ids[2], 3)
    assert f"row id {ids[2]}" in report.summary()
    assert ledger.verify(study="bystander").ok


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(ledger_url, "UPDATE hpaudit_windows SET co2e_g = 0 WHERE id = :i", i=ids[1])
    row = ledger.entries(study="victim")  # the forger recomputes row 2's own hash ...
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        raw = conn.execute(sa.text("SELECT * FROM hpaudit_windows WHERE id = :i"), {"i": ids[1]})
        stored = dict(raw.mappings().one())
        conn.execute(
            sa.text("UPDATE hpaudit_windows SET row_hash = :h WHERE id = :i"),
            {"h": row_hash(stored, stored["prev_hash"]), "i": ids[1]},
        )
    engine.dispose()
    assert len(row) == 5
    first = ledger.verify().first  # ... but row 3 still links to the original
    assert first is not None and first.row_id == ids[1] and first.kind == "edited"
    assert f"row id {ids[2]} (seq 3) no longer links" in first.message


def test_a_deleted_row_is_named(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(ledger_url, "DELETE FROM hpaudit_windows WHERE id = :i", i=ids[1])
    first = ledger.verify().first
    assert first is not None and (first.kind, first.seq) == ("deleted", 2)
    assert "seq 2" in first.message


def test_deleting_the_newest_rows_is_caught_by_the_head(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(ledger_url, "DELETE FROM hpaudit_windows WHERE id >= :i AND study = 'victim'", i=ids[3])
    first = ledger.verify().first
    assert first is not None and (first.kind, first.seq) == ("deleted", 4)


def test_deleting_a_row_and_renumbering_the_rest_is_caught(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(ledger_url, "DELETE FROM hpaudit_windows WHERE id = :i", i=ids[4])
    _sql(ledger_url, "UPDATE hpaudit_chain_heads SET seq = 4 WHERE study = 'victim'")
    assert not ledger.verify().ok  # the head's hash still points at the deleted row


def test_an_inserted_row_is_named(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    # A finished row written straight into the table, outside the chain.
    _sql(
        ledger_url,
        "INSERT INTO hpaudit_windows (study, trial_key, phase, status, host, pid, started_unix_s,"
        " updated_unix_s, checkpoint_interval_s, wall_s, energy_j, energy_by_domain, sources,"
        " gpu_s, devices, gpu_share, pue, g_per_kwh, intensity_source, co2e_g, usd, params,"
        " reserved_energy_j, reserved_co2e_g, reserved_usd, reserved_gpu_s, rev) VALUES ('victim',"
        " 'victim:fake', 'tuning', 'complete', 'h', 1, 0, 0, 30, 1, 5, '{}', '{}', 0, '[]', 1,"
        " 1.58, 400, 'x', 0, 0, '{}', 0, 0, 0, 0, 0)",
    )
    first = ledger.verify().first
    assert first is not None and first.kind == "inserted" and first.row_id == max(ids) + 2


def test_an_inserted_link_with_a_valid_hash_is_caught_by_the_head(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    w = ledger.open_window("victim", "victim:late")
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:  # forge seq 6 with a correct hash, but leave the head alone
        last = conn.execute(
            sa.text("SELECT row_hash FROM hpaudit_windows WHERE id = :i"), {"i": ids[-1]}
        ).scalar_one()
        row = dict(
            conn.execute(sa.text("SELECT * FROM hpaudit_windows WHERE id = :i"), {"i": w})
            .mappings()
            .one()
        )
        row.update(status="complete", seq=6, prev_hash=last, ended_unix_s=row["updated_unix_s"])
        conn.execute(
            sa.text(
                "UPDATE hpaudit_windows SET status='complete', seq=6, prev_hash=:p, row_hash=:h,"
                " ended_unix_s=updated_unix_s WHERE id = :i"
            ),
            {"p": last, "h": row_hash(row, last), "i": w},
        )
    engine.dispose()
    first = ledger.verify().first
    assert first is not None and first.kind == "inserted" and first.row_id == w


def test_a_reopened_row_is_caught(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(ledger_url, "UPDATE hpaudit_windows SET status = 'running' WHERE id = :i", i=ids[0])
    first = ledger.verify().first
    assert first is not None and first.row_id == ids[0]


def test_a_rewritten_head_is_caught(ledger_url: str) -> None:
    ledger, ids = _ledger_with_rows(ledger_url)
    _sql(
        ledger_url,
        "UPDATE hpaudit_chain_heads SET head_hash = :h WHERE study = 'victim'",
        h="0" * 64,
    )
    first = ledger.verify().first
    assert first is not None and first.row_id == ids[-1] and "chain head" in first.message


def test_row_hash_is_unchanged_for_rows_already_written() -> None:
    # Pinned with the implementation that wrote the existing ledgers: a faster row_hash must
    # hash every row exactly as before, or every chain written until now would fail verify.
    row: dict[str, Any] = {c: None for c in _chain.HASHED_COLUMNS}
    row.update(
        id=7, study="s", trial_key="s:1", trial_number=1, phase="tuning", status="complete",
        host="h", pid=42, started_unix_s=1700000000.25, updated_unix_s=1700000100.5,
        ended_unix_s=1700000100.5, checkpoint_interval_s=30, wall_s=100.25, step=3,
        energy_j=1234.5, energy_by_domain='{"cpu":1234.5}', sources='{"cpu":"replayed"}',
        source="replayed", gpu_s=0, devices="[]", gpu_share=1, pue=1.58,
        g_per_kwh=float("nan"), intensity_source="x", co2e_g=0.1, usd=0.002,
        params='{"lr":0.1}', value=0.5, values_json=None, reserved_energy_j=0,
        reserved_co2e_g=0, reserved_usd=0, reserved_gpu_s=0, rev=2, seq=1, prev_hash="0" * 64,
    )  # fmt: skip
    expected = "5c4e74a90752ef28f33b6eb83ec05061fe0abd6f60753d88a8d1d1313749bcfd"
    assert _chain.row_hash(row, "0" * 64) == expected


def _sealed_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in _schema.windows.columns}
    row.update(id=3, study="s", trial_key="k", status="complete", energy_j=12.5, rev=2, pid=7)
    row.update(values)
    row["row_hash"] = _chain.seal(row)
    return row


def test_link_sealed_equals_checking_the_seal_then_hashing_the_linked_row() -> None:
    prev = "ab" * 32
    # String values that spell the chain columns' JSON must not be mistaken for them.
    tricky = '{"seq":null,"prev_hash":null}'
    for row in (_sealed_row(), _sealed_row(params=tricky, study='x"prev_hash":null')):
        assert _chain.is_sealed(row)
        expected = row_hash({**row, "seq": 41, "prev_hash": prev}, prev)
        assert _chain.link_sealed(row, 41, prev) == expected


def test_link_sealed_refuses_an_edited_or_unfinished_row() -> None:
    row = _sealed_row()
    assert _chain.link_sealed({**row, "energy_j": 1.0}, 1, _chain.GENESIS) is None
    assert _chain.link_sealed({**row, "status": "running"}, 1, _chain.GENESIS) is None
    assert _chain.link_sealed({**row, "seq": 4}, 1, _chain.GENESIS) is None


@pytest.mark.parametrize(
    ("column", "value"),
    [("energy_j", "'abc'"), ("seq", "'x'"), ("seq", "1.5"), ("step", "'ten'")],
)
def test_a_value_of_the_wrong_type_is_named_not_a_traceback(
    sqlite_url: str, column: str, value: str
) -> None:
    # SQLite keeps whatever a hand edit writes; verify must name the row, not crash on it
    # (or, for seq 1.5, hash it as 1 and call the ledger sound).
    ledger, ids = _ledger_with_rows(sqlite_url)
    _sql(sqlite_url, f"UPDATE hpaudit_windows SET {column} = {value} WHERE id = :i", i=ids[1])
    report = ledger.verify()
    first = report.first
    assert first is not None and not report.ok
    assert (first.study, first.kind, first.row_id) == ("victim", "edited", ids[1])
    assert f"row id {ids[1]}" in first.message and column in first.message
    assert ledger.verify(study="bystander").ok


def test_a_head_of_the_wrong_type_is_named_not_a_traceback(sqlite_url: str) -> None:
    ledger, _ = _ledger_with_rows(sqlite_url)
    _sql(sqlite_url, "UPDATE hpaudit_chain_heads SET seq = 'zz' WHERE study = 'victim'")
    report = ledger.verify()
    assert report.first is not None and report.first.kind == "edited"
    assert "chain head" in report.summary() and len(report.problems) == 1


@pytest.mark.parametrize("seq", ["'zz'", "1.5"])
def test_finalising_after_a_head_edited_by_hand_is_a_one_line_error(
    sqlite_url: str, seq: str
) -> None:
    ledger, _ = _ledger_with_rows(sqlite_url)
    window = ledger.open_window("victim", "victim:late")
    _sql(sqlite_url, f"UPDATE hpaudit_chain_heads SET seq = {seq} WHERE study = 'victim'")
    with pytest.raises(LedgerError, match=r"chain head holds seq .*edited by hand.*hpaudit verify"):
        ledger.finalize(window, Measurement(1.0, {"cpu": 1.0}), status="complete")
    assert ledger.entries(study="victim").set_index("id").loc[window, "status"] == "running"

"""Bad input when opening a ledger: one clear LedgerError, and the file is left as it was."""

from __future__ import annotations

import ctypes
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from hpsearch_budget.errors import HpauditError, LedgerError
from hpsearch_budget.ledger import SCHEMA_VERSION, Ledger
from hpsearch_budget.meters import Measurement


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line(error: pytest.ExceptionInfo[LedgerError]) -> str:
    message = str(error.value)
    assert "\n" not in message and isinstance(error.value, HpauditError)
    assert error.value.exit_code == 2
    return message


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/db", "unsupported ledger database 'mysql'"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:////no/such/folder/ledger.db", "folder '/no/such/folder' does not exist"),
        ("   ", "non-empty"),
    ],
)
def test_wrong_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(LedgerError, match=match) as error:
        Ledger(url)
    _one_line(error)


def test_a_directory_is_not_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="is a directory"):
        Ledger(f"sqlite:///{tmp_path}")


_OPEN_LEDGER = """
import sys
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import Ledger
try:
    Ledger(sys.argv[1])
except LedgerError as error:
    print(error)
    sys.exit(3)
"""


def _drop_root_file_override() -> None:
    """Run as root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so file permissions apply
    to it as to any user (CI runs the tests as root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # PR_CAPBSET_DROP = 24: gone from this process and what it executes
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


_VERIFY_LEDGER = """
import sys
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import Ledger
try:
    print(Ledger(sys.argv[1], create=False).verify().summary())
except LedgerError as error:
    print(error)
    sys.exit(3)
"""


def _open_as_a_user(url: str, script: str = _OPEN_LEDGER) -> subprocess.CompletedProcess[str]:
    """``Ledger(url)`` (or ``script``) in a child process that file permissions bind, even
    under root."""
    drop = _drop_root_file_override if os.geteuid() == 0 else None
    try:
        return subprocess.run(
            [sys.executable, "-c", script, url],
            preexec_fn=drop,  # only prctl runs between fork and exec
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.SubprocessError as exc:  # the capability could not be dropped
        pytest.skip(f"cannot run without root's file override here: {exc}")


def _refused_not_writable(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 3, done.stderr
    assert "not writable" in done.stdout and len(done.stdout.strip().splitlines()) == 1


def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        _refused_not_writable(_open_as_a_user(f"sqlite:///{tmp_path / 'l.db'}"))
        assert not (tmp_path / "l.db").exists()
    finally:
        tmp_path.chmod(0o700)


def test_a_path_no_one_can_create_a_file_in() -> None:
    # /proc refuses new files even to root, so this runs wherever the tests run.
    with pytest.raises(LedgerError, match="cannot write ledger") as error:
        Ledger("sqlite:////proc/hpaudit-ledger.db")
    _one_line(error)


def test_a_read_only_ledger_file_is_refused_without_change(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    Ledger(f"sqlite:///{path}").close()
    before = _digest(path)
    path.chmod(0o400)
    try:
        _refused_not_writable(_open_as_a_user(f"sqlite:///{path}"))
        assert _digest(path) == before
    finally:
        path.chmod(0o600)


def _read_only_ledger(path: Path) -> str:
    ledger = Ledger(f"sqlite:///{path}")
    ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    ledger.close()
    path.chmod(0o400)
    return _digest(path)


def test_a_read_only_ledger_can_still_be_verified(tmp_path: Path) -> None:
    # Readers (hpaudit verify / show / export, reports) open with create=False: an archived,
    # read-only copy was refused as "not writable" although they never write.
    path = tmp_path / "archived.db"
    before = _read_only_ledger(path)
    try:
        done = _open_as_a_user(f"sqlite:///{path}", _VERIFY_LEDGER)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ledger sound: 1 finished rows" in done.stdout
        assert _digest(path) == before
    finally:
        path.chmod(0o600)


def test_a_read_only_ledger_in_a_read_only_folder_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "archived.db"
    _read_only_ledger(path)
    tmp_path.chmod(0o500)
    try:
        done = _open_as_a_user(f"sqlite:///{path}", _VERIFY_LEDGER)
        assert done.returncode == 3, done.stderr
        assert "archived.db-shm" in done.stdout and "copy the ledger to a writable folder" in (
            done.stdout
        )
        assert len(done.stdout.strip().splitlines()) == 1
    finally:
        tmp_path.chmod(0o700)
        path.chmod(0o600)


def test_a_corrupted_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database at all\n" * 200)
    before = _digest(path)
    with pytest.raises(LedgerError, match="not a SQLite database or is corrupted") as error:
        Ledger(f"sqlite:///{path}")
    _one_line(error)
    assert _digest(path) == before


def test_a_truncated_ledger_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.db"
    ledger = Ledger(f"sqlite:///{path}")
    for i in range(50):
        w = ledger.open_window("s", f"s:{i}", params={"pad": "x" * 500})
        ledger.finalize(w, Measurement(1.0, {"cpu": 1.0}), status="complete")
    ledger.close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])  # smash the schema page
    with pytest.raises(LedgerError, match="corrupted"):
        Ledger(f"sqlite:///{path}").entries()


def test_a_foreign_database_is_not_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "optuna.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    before = _digest(path)
    with pytest.raises(LedgerError, match=r"not an hpaudit ledger \(it holds tables studies\)"):
        Ledger(f"sqlite:///{path}")
    assert _digest(path) == before  # nothing created in it
    shared = Ledger(f"sqlite:///{path}", allow_other_tables=True)  # unless asked to share
    shared.finalize(shared.open_window("s", "s:0"), Measurement(1.0), status="complete")
    assert shared.verify().ok


def test_a_newer_schema_is_refused(sqlite_url: str) -> None:
    Ledger(sqlite_url).close()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE hpaudit_meta SET value = :v WHERE key = 'schema_version'"),
            {"v": str(SCHEMA_VERSION + 1)},
        )
    engine.dispose()
    with pytest.raises(LedgerError, match=f"schema v{SCHEMA_VERSION + 1}.*newer") as error:
        Ledger(sqlite_url)
    assert "pip install -U" in _one_line(error)


def test_a_damaged_ledger_is_refused(sqlite_url: str) -> None:
    Ledger(sqlite_url).close()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE hpaudit_chain_heads"))
    engine.dispose()
    with pytest.raises(LedgerError, match=r"damaged: table.*hpaudit_chain_heads"):
        Ledger(sqlite_url)


def test_a_locked_ledger_times_out_with_a_clear_message(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPAUDIT_LEDGER_TIMEOUT_S", "0.2")
    ledger = Ledger(sqlite_url)
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(LedgerError, match="locked by another process") as error:
            ledger.open_window("s", "s:0")
        _one_line(error)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ledger.entries().empty  # and nothing was half-written
    ledger.open_window("s", "s:0")  # it works again once the lock is released


def test_a_bad_timeout_setting_is_refused(sqlite_url: str, monkeypatch) -> None:
    monkeypatch.setenv("HPAUDIT_LEDGER_TIMEOUT_S", "soon")
    with pytest.raises(LedgerError, match="HPAUDIT_LEDGER_TIMEOUT_S"):
        Ledger(sqlite_url)


def test_an_unreachable_postgres_server(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install -e '.[postgres]'")
    with pytest.raises(LedgerError, match="cannot reach PostgreSQL ledger") as error:
        Ledger("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    message = _one_line(error)
    assert "secret" not in message  # the password is never printed


@pytest.mark.postgres
def test_a_missing_postgres_database(pg_url: str) -> None:
    with pytest.raises(LedgerError, match="cannot reach PostgreSQL ledger"):
        Ledger(pg_url + "_missing")


@pytest.mark.postgres
def test_a_foreign_postgres_database(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE trials (id int)"))
    engine.dispose()
    with pytest.raises(LedgerError, match="not an hpaudit ledger"):
        Ledger(pg_url)


@pytest.mark.parametrize("column", ["energy_j", "reserved_energy_j", "energy_by_domain"])
def test_a_running_row_edited_by_hand_is_a_ledger_error_not_a_crash(
    tmp_path: Path, column: str
) -> None:
    """Another writer moved the row (its revision changed), so the ledger re-reads it and
    finds what it never writes: a one-line LedgerError, not a ValueError half-way through
    charging it."""
    path = tmp_path / "ledger.db"
    ledger = Ledger(f"sqlite:///{path}")
    w = ledger.open_window("s", "s:0", trial_number=0)
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 5.0}))
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE hpaudit_windows SET {column} = 'n/a', rev = rev + 1 WHERE id = ?", (w,))
    for call in (
        lambda: ledger.checkpoint(w, Measurement(2.0, {"cpu": 9.0})),
        lambda: ledger.finalize(w, Measurement(2.0, {"cpu": 9.0}), status="complete"),
    ):
        with pytest.raises(LedgerError, match=f"in {column}, which the ledger never writes"):
            call()
    ledger.close()

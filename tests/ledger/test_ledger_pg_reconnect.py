"""PostgreSQL: a ledger call whose connection broke reconnects and runs again, and writes once.

Connections break for real here: the server ends a backend (``pg_terminate_backend``), a TCP
forwarder between the ledger and the server drops a connection the way a network or a proxy
does -- including right after a statement committed, before its answer came back -- and the
server itself restarts in the middle of an Optuna sweep.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy as sa

from hpsearch_budget import Budget
from hpsearch_budget.budget import Cost
from hpsearch_budget.errors import LedgerError
from hpsearch_budget.ledger import Ledger, Scope, _engine
from hpsearch_budget.meters import Measurement
from hpsearch_budget.optuna import optimize

pytestmark = pytest.mark.postgres

# The end of every answer of the server: ReadyForQuery. In autocommit the statement has
# committed by then (and a COMMIT has), so an answer cut after it is an ambiguous commit.
_READY = b"Z\x00\x00\x00\x05"


class Forwarder:
    """A TCP forwarder to PostgreSQL that can break its connections as a network does."""

    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._pattern: bytes | None = None
        self.cut = threading.Event()  # set when an armed cut happened
        self.down = False  # refuse new connections (a server being restarted)
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after_answer(self, pattern: bytes) -> None:
        """Let the next message holding ``pattern`` reach the server, then drop that
        connection as soon as the server has answered, without passing the answer on."""
        self.cut.clear()
        self._pattern = pattern

    def drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def close(self) -> None:
        self._listener.close()
        self.drop_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            server = socket.create_connection(self._target)
            with self._lock:
                self._pairs.append((client, server))
            cutting = threading.Event()
            threading.Thread(target=self._up, args=(client, server, cutting), daemon=True).start()
            threading.Thread(target=self._back, args=(server, client, cutting), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, cutting: threading.Event) -> None:
        while data := _recv(client):
            if self._pattern is not None and self._pattern in data:
                self._pattern = None
                cutting.set()
            try:
                server.sendall(data)
            except OSError:
                break
        _close(client, server)

    def _back(self, server: socket.socket, client: socket.socket, cutting: threading.Event) -> None:
        answer = b""
        while data := _recv(server):
            if cutting.is_set():
                answer += data
                if _READY in answer:
                    break
                continue
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client, server)
        if cutting.is_set():
            self.cut.set()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@pytest.fixture
def forwarded(pg_url: str) -> Iterator[tuple[str, Forwarder]]:
    """(the ledger URL through a forwarder, the forwarder); the test reaches the server direct."""
    url = sa.engine.make_url(pg_url)
    forwarder = Forwarder(int(url.port or 5432))
    yield url.set(port=forwarder.port).render_as_string(hide_password=False), forwarder
    forwarder.close()


@pytest.fixture(autouse=True)
def _short_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPAUDIT_LEDGER_RETRY_S", "20")


def _rows(pg_url: str, study: str) -> list[dict]:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM hpaudit_windows WHERE study = :s ORDER BY id"), {"s": study}
        )
        found = [dict(r) for r in rows.mappings()]
    engine.dispose()
    return found


def _terminate(pg_url: str, where: str = "true") -> int:
    """End the ledger's server sessions (those of the test database but this one)."""
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        ended = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}"
            )
        ).scalar_one()
    engine.dispose()
    return int(ended)


def _verified(pg_url: str) -> None:
    with Ledger(pg_url, create=False) as reader:
        report = reader.verify()
    assert report.ok and report.pending == 0, report


def _finish_and_verify(ledger: Ledger, w: int, pg_url: str) -> None:
    """The window can still be finalised, and the ledger verifies once closed."""
    ledger.finalize(w, Measurement(1.0, {"cpu": 2.0}), status="complete")
    ledger.close()
    _verified(pg_url)


# -- the server ends the ledger's sessions ----------------------------------------------------


def test_every_call_after_the_server_dropped_the_sessions_succeeds(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    w = ledger.open_window("s", "s:0")
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 5.0}))
    ledger.try_reserve(w, Cost(energy_j=3.0), [])
    calls = [
        lambda: ledger.open_window("s", "s:1"),
        lambda: ledger.checkpoint(w, Measurement(2.0, {"cpu": 8.0})),
        lambda: ledger.try_reserve(w, Cost(energy_j=4.0), []),
        lambda: ledger.spent(Scope(study="s")),
        lambda: ledger.entries(study="s"),
        lambda: ledger.finalize(w, Measurement(3.0, {"cpu": 9.0}), status="complete"),
    ]
    for call in calls:  # each after the server ended every session of the ledger
        assert _terminate(pg_url) >= 1
        call()
    ledger.close()
    rows = _rows(pg_url, "s")
    assert [r["trial_key"] for r in rows] == ["s:0", "s:1"]  # no window twice
    assert rows[0]["status"] == "complete" and rows[0]["energy_j"] == 9.0
    assert rows[0]["reserved_energy_j"] == 7.0  # each reservation once
    _verified(pg_url)


def test_a_call_whose_session_the_server_ends_while_it_waits_succeeds(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    w = ledger.open_window("s", "s:0")
    ledger.reap()  # no opportunistic reap inside the call below
    engine = sa.create_engine(pg_url)
    results: list[object] = []
    with engine.connect() as holder:  # holds the reservations lock: try_reserve waits on it
        holder.execute(sa.text("SELECT pg_advisory_lock(:a, 0)"), {"a": _engine._LOCK_RESERVE})
        call = threading.Thread(
            target=lambda: results.append(ledger.try_reserve(w, Cost(energy_j=2.0), []))
        )
        call.start()
        deadline = time.monotonic() + 20
        while not _terminate(pg_url, "wait_event_type = 'Lock'"):  # in the middle of the call
            assert time.monotonic() < deadline, "try_reserve never waited on the lock"
            time.sleep(0.02)
        time.sleep(0.2)
        holder.execute(sa.text("SELECT pg_advisory_unlock(:a, 0)"), {"a": _engine._LOCK_RESERVE})
        call.join(timeout=30)
    engine.dispose()
    assert results == [True]
    assert ledger.committed(Scope(study="s")).energy_j == 2.0  # reserved once
    _finish_and_verify(ledger, w, pg_url)


# -- a connection cut after the server committed, before its answer arrived -----------------


def test_an_opening_whose_answer_was_lost_is_one_window(forwarded, pg_url: str) -> None:
    url, forwarder = forwarded
    ledger = Ledger(url)
    forwarder.cut_after_answer(b"cut-open")
    w = ledger.open_window("cut-open", "k:0")
    assert forwarder.cut.is_set()  # the first INSERT committed and its answer was lost
    rows = _rows(pg_url, "cut-open")
    assert [r["id"] for r in rows] == [w]
    _finish_and_verify(ledger, w, pg_url)


def test_an_opening_with_a_reservation_whose_answer_was_lost(forwarded, pg_url: str) -> None:
    url, forwarder = forwarded
    ledger = Ledger(url)
    ledger.reap()  # no reap inside the call below; and the durable session is open
    forwarder.cut_after_answer(b"COMMIT")
    w, reserved = ledger.open_window("s", "k:0", reserve=(Cost(energy_j=5.0), []))
    assert forwarder.cut.is_set() and reserved
    assert [r["id"] for r in _rows(pg_url, "s")] == [w]
    assert ledger.committed(Scope(study="s")).energy_j == 5.0
    ledger.close()


def test_a_checkpoint_whose_answer_was_lost_is_charged_once(forwarded, pg_url: str) -> None:
    url, forwarder = forwarded
    ledger = Ledger(url)
    cut, control = ledger.open_window("s", "k:cut"), ledger.open_window("s", "k:control")
    forwarder.cut_after_answer(b"1234.5")  # the checkpoint's energy, sent as text
    ledger.checkpoint(cut, Measurement(2.0, {"cpu": 1234.5}))
    assert forwarder.cut.is_set()
    ledger.checkpoint(control, Measurement(2.0, {"cpu": 1234.5}))
    rows = {r["trial_key"]: r for r in _rows(pg_url, "s")}
    for column in ("energy_j", "co2e_g", "usd"):
        assert rows["k:cut"][column] == rows["k:control"][column] > 0
    ledger.close()


def test_a_finalisation_whose_answer_was_lost_is_finished_once(forwarded, pg_url: str) -> None:
    url, forwarder = forwarded
    ledger = Ledger(url)
    w = ledger.open_window("cut-final", "k:0")
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 100.0}))
    forwarder.cut_after_answer(b"cut-final")  # the seal carries the study; checkpoints do not
    cost = ledger.finalize(w, Measurement(2.0, {"cpu": 300.0}), status="complete", value=0.5)
    assert forwarder.cut.is_set()
    (row,) = _rows(pg_url, "cut-final")
    assert row["status"] == "complete" and row["energy_j"] == 300.0 == cost.energy_j
    assert row["co2e_g"] == cost.co2e_g and row["seq"] == 1  # sealed once, then linked
    ledger.close()
    _verified(pg_url)


def test_a_reservation_whose_commit_answer_was_lost_is_taken_once(forwarded, pg_url) -> None:
    url, forwarder = forwarded
    ledger = Ledger(url)
    w = ledger.open_window("s", "k:0")
    ledger.reap()
    assert ledger.try_reserve(w, Cost(energy_j=1.0), [])  # the durable session is open
    forwarder.cut_after_answer(b"COMMIT")
    assert ledger.try_reserve(w, Cost(energy_j=2.0), [(Scope(), Cost(energy_j=10.0))])
    assert forwarder.cut.is_set()
    assert ledger.committed(Scope(study="s")).energy_j == 3.0
    ledger.close()


def test_a_server_that_stays_away_gives_one_line_and_loses_nothing(
    forwarded, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPAUDIT_LEDGER_RETRY_S", "0.5")
    url, forwarder = forwarded
    ledger = Ledger(url.replace("postgres@", "postgres:s3cret@"))
    w = ledger.open_window("s", "k:0")
    ledger.checkpoint(w, Measurement(1.0, {"cpu": 7.0}))
    forwarder.down = True
    forwarder.drop_all()
    with pytest.raises(LedgerError) as error:
        ledger.checkpoint(w, Measurement(2.0, {"cpu": 9.0}))
    message = str(error.value)
    assert "\n" not in message and "s3cret" not in message
    assert f"127.0.0.1:{forwarder.port}" in message and "HPAUDIT_LEDGER_RETRY_S" in message
    assert "lost the connection" in message and "check that the server is up" in message
    forwarder.down = False  # back: the window is as last written, and goes on
    ledger.finalize(w, Measurement(3.0, {"cpu": 11.0}), status="complete")
    ledger.close()
    (row,) = _rows(pg_url, "s")
    assert row["energy_j"] == 11.0
    _verified(pg_url)


def test_a_bad_retry_setting_is_refused(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPAUDIT_LEDGER_RETRY_S", "forever")
    with pytest.raises(LedgerError, match="HPAUDIT_LEDGER_RETRY_S must be a number") as error:
        Ledger(pg_url)
    assert "\n" not in str(error.value)


# -- the server restarts in the middle of a sweep ---------------------------------------------


def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5, 5)
    for step in range(3):
        end = time.process_time() + 0.01
        while time.process_time() < end:  # some CPU time for the estimate to charge
            pass
        trial.report(x**2, step)
        time.sleep(0.02)
    return x**2


def _sweep_survives(ledger_url: str, pg_url: str, interrupt) -> None:
    study = optuna.create_study(study_name="sweep")
    stop = threading.Event()
    trials_then: list[int] = []  # trials started when the interruption was over

    def interrupter() -> None:
        while len(study.trials) < 8 and not stop.is_set():
            time.sleep(0.01)
        interrupt()
        trials_then.append(len(study.trials))

    thread = threading.Thread(target=interrupter)
    thread.start()
    try:
        run = optimize(
            study,
            _objective,
            budget=Budget(energy_kwh=1e6),
            ledger=ledger_url,
            n_trials=40,
            policy=False,
            min_checkpoint_interval_s=0.0,
        )
    finally:
        stop.set()
        thread.join()
    assert trials_then and trials_then[0] < 40  # the sweep went on after it
    assert run.n_complete == 40 and run.n_failed == 0
    rows = _rows(pg_url, "sweep")
    keys = [r["trial_key"] for r in rows if r["phase"] == "tuning"]  # idle rows are no trial
    assert len(keys) == len(set(keys)) == 40  # every trial has exactly one window
    assert all(r["status"] == "complete" for r in rows)
    _verified(pg_url)
    with Ledger(pg_url, create=False) as reader:
        spent = reader.spent(Scope(study="sweep"))
    assert spent.energy_j == pytest.approx(sum(r["energy_j"] for r in rows), rel=1e-12)
    assert spent.co2e_g == pytest.approx(sum(r["co2e_g"] for r in rows), rel=1e-12)


def test_a_sweep_rides_out_an_outage(forwarded, pg_url: str) -> None:
    url, forwarder = forwarded

    def outage() -> None:  # every connection dropped, none taken for a second
        forwarder.down = True
        forwarder.drop_all()
        time.sleep(1.0)
        forwarder.down = False

    _sweep_survives(url, pg_url, outage)


def test_a_sweep_rides_out_a_server_restart(pg_url: str) -> None:
    """Needs the server's data folder and binaries ($HPAUDIT_TEST_PG_DATA, $HPAUDIT_TEST_PG_BIN,
    set by .ci/run) to restart it."""
    data, bin_dir = os.environ.get("HPAUDIT_TEST_PG_DATA"), os.environ.get("HPAUDIT_TEST_PG_BIN")
    if not data or not bin_dir:
        pytest.skip("set HPAUDIT_TEST_PG_DATA and HPAUDIT_TEST_PG_BIN to restart the server")
    command = f"{bin_dir}/pg_ctl -D {data} -m fast -w restart -l {data}/log"
    argv = ["su", "postgres", "-c", command] if os.geteuid() == 0 else ["sh", "-c", command]

    def restart() -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    _sweep_survives(pg_url, pg_url, restart)

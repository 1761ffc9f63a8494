"""Writing a report or an export to a device or pipe (``--out /dev/null``, a named pipe)
writes into it: the atomic rename used for regular files would replace the device itself (as
root, ``--out /dev/null`` once turned /dev/null into a regular file)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from hpsearch_budget.ledger import Ledger
from hpsearch_budget.ledger._export import export_frame
from hpsearch_budget.meters import Measurement
from hpsearch_budget.report import write_atomic


def _drain(fifo: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as f:
            into.append(f.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_report_written_to_a_pipe_goes_through_it(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    write_atomic(fifo, "# report\n")
    reader.join(timeout=10)
    assert got == [b"# report\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still the pipe, not a file renamed over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary left


def test_an_export_written_to_a_pipe_goes_through_it(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.finalize(ledger.open_window("s", "s:0"), Measurement(1.0), status="complete")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = _drain(fifo, got)
    assert export_frame(ledger.entries(), fifo, "csv") == 1
    reader.join(timeout=10)
    assert got and got[0].startswith(b"id,") and b"s:0" in got[0]
    assert stat.S_ISFIFO(fifo.stat().st_mode)

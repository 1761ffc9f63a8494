"""``hpaudit export`` reads and writes a chunk of rows at a time: the file is the same as one
written from every row at once, and memory does not grow with the ledger."""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from hpsearch_budget.cli import main
from hpsearch_budget.ledger import FORMATS, Ledger, export_chunks, export_frame
from hpsearch_budget.meters import Measurement, Source


def _every_kind(url: str) -> None:
    """Rows of every kind an export meets: finished tuning rows (measured and estimated
    energy, unicode params, a NaN value), final / seed / idle rows, a running and a killed
    window, one with no project and no energy source."""
    ledger = Ledger(url)
    measured = Measurement(
        12.5,
        {"gpu:0": 3.6e5, "cpu": 7.2e4, "ram": 3.6e3},
        {"gpu:0": Source.MEASURED, "cpu": Source.ESTIMATED, "ram": Source.ESTIMATED},
    )
    estimated = Measurement(3.0, {"cpu": 90.0}, {"cpu": Source.ESTIMATED})
    for i, (status, value) in enumerate(
        [("complete", 0.25), ("pruned", float("nan")), ("failed", None), ("complete", 1e-9)]
    ):
        params = {"lr": 0.1 * i, "opt": "adam"}
        w = ledger.open_window("cnn", f"cnn:{i}", trial_number=i, devices=["gpu:0"],
                               project="lab", user="ana", params=params)  # fmt: skip
        ledger.finalize(w, measured if i % 2 else estimated, status=status, value=value)
    w = ledger.open_window("ünï ☃", "ünï:0", params={"naïve": "日本語", "β": [1, None, 2.5]})
    ledger.finalize(w, Measurement(1.0), status="complete", values=[0.5, 2.0])
    for phase in ("final", "seed", "idle"):
        w = ledger.open_window("cnn", f"cnn:{phase}", phase=phase, devices=["gpu:0", "gpu:1"])
        ledger.finalize(w, measured, status="complete")
    ledger.checkpoint(ledger.open_window("cnn", "cnn:running"), estimated)
    dead = ledger.open_window("mlp", "mlp:dead", checkpoint_interval_s=1.0)
    ledger.open_window("mlp", "mlp:opened")  # not yet checkpointed: no duration
    ledger.close()
    con = sqlite3.connect(url.removeprefix("sqlite:///"))  # its worker died long ago
    con.execute("UPDATE hpaudit_windows SET updated_unix_s = 0 WHERE id = ?", (dead,))
    con.commit()
    con.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_chunked_export_is_the_file_of_all_rows_at_once(
    sqlite_url: str, tmp_path: Path, fmt: str
) -> None:
    _every_kind(sqlite_url)
    ledger = Ledger(sqlite_url, create=False)
    whole = tmp_path / f"whole.{fmt}"
    n = export_frame(ledger.entries(), whole, fmt)
    assert n == 11
    for rows in (1, 5, 11, 5000):  # a chunk per row, a short last chunk, one exact, one chunk
        chunked = tmp_path / f"chunked{rows}.{fmt}"
        assert export_chunks(ledger.entry_chunks(rows=rows), chunked, fmt) == n
        assert chunked.read_bytes() == whole.read_bytes(), rows
    cli = tmp_path / f"cli.{fmt}"
    with pytest.raises(SystemExit) as done:  # the command, as a user runs it
        main(["export", "--ledger", sqlite_url, "--format", fmt, "--out", str(cli)])
    assert not done.value.code
    assert cli.read_bytes() == whole.read_bytes()
    ledger.close()


@pytest.mark.parametrize("fmt", ["csv", "json", "codecarbon"])
def test_an_empty_export_keeps_its_header(sqlite_url: str, tmp_path: Path, fmt: str) -> None:
    _every_kind(sqlite_url)
    ledger = Ledger(sqlite_url, create=False)
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    assert export_frame(ledger.entries("nobody"), whole, fmt) == 0
    assert export_chunks(ledger.entry_chunks("nobody", rows=3), chunked, fmt) == 0
    assert chunked.read_bytes() == whole.read_bytes() and whole.stat().st_size > 0
    ledger.close()


def _peak_bytes(ledger: Ledger, study: str | None, out: Path, fmt: str) -> int:
    tracemalloc.start()
    try:
        export_chunks(ledger.entry_chunks(study, rows=50), out, fmt)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["csv", "json", "codecarbon"])
def test_export_memory_does_not_grow_with_the_ledger(
    sqlite_url: str, tmp_path: Path, fmt: str
) -> None:
    # 4 studies of 150 windows: one study (N rows) against the whole ledger (4N)
    ledger = Ledger(sqlite_url)
    m = Measurement(10.0, {"gpu:0": 100.0, "cpu": 10.0}, {"gpu:0": Source.MEASURED})
    for s in range(4):
        for i in range(150):
            w = ledger.open_window(f"s{s}", f"s{s}:{i}", params={"lr": i / 7, "name": "x" * 40})
            ledger.finalize(w, m, status="complete", value=i / 3)
    ledger.close()
    reader = Ledger(sqlite_url, create=False)
    out = tmp_path / "out"
    _peak_bytes(reader, "s0", out, fmt)  # first use: imports, compiled statements
    one = _peak_bytes(reader, "s0", out, fmt)
    four = _peak_bytes(reader, None, out, fmt)
    reader.close()
    # all rows in memory: ~4x; a chunk at a time: about the same
    assert four < 1.5 * one, (one, four)

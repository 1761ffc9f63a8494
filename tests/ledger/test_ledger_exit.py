"""A ledger never closed is closed at interpreter exit: a copy of its SQLite file alone holds
every row (nothing left behind in the write-ahead log)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from hpsearch_budget.ledger import Ledger

_WRITER = textwrap.dedent(
    """
    import sys
    from hpsearch_budget.ledger import Ledger
    from hpsearch_budget.meters import Measurement

    ledger = Ledger(sys.argv[1])  # never closed, as a sweep script that just ends
    for i in range(20):
        ledger.finalize(ledger.open_window("s", f"s:{i}"), Measurement(1.0), status="complete")
    """
)


def test_an_unclosed_sqlite_ledger_is_whole_in_its_file_after_exit(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    url = f"sqlite:///{folder / 'ledger.db'}"
    subprocess.run([sys.executable, "-c", _WRITER, url], check=True, timeout=120)
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.db"]  # no -wal, no -shm
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(folder / "ledger.db", copy / "ledger.db")
    copied = Ledger(f"sqlite:///{copy / 'ledger.db'}", create=False)
    assert len(copied.entries(study="s")) == 20 and copied.verify("s").ok

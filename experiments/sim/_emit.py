"""Where an evaluation script's results go: the table to stdout, the rows to ``--json``, the
table with its command line to ``--out`` (Markdown)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def emit(
    script: str,
    argv: Sequence[str] | None,
    title: str,
    text: str,
    rows: list[Any],
    *,
    json_path: Path | None = None,
    out: Path | None = None,
    preamble: str = "",
    notes: str = "",
) -> None:
    """Print ``text``; write ``rows`` as JSON and the Markdown page when asked."""
    print(text)
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1))
    if out:
        args = list(argv) if argv is not None else sys.argv[1:]
        cmd = f"python experiments/{script} " + " ".join(args)
        out.write_text(f"# {title}\n\nCommand: `{cmd}`\n\n{preamble}{text}\n{notes}")

"""Helpers shared by CLI commands: output formats and one-line errors."""

from __future__ import annotations

import json
import math
import os
import sys
from enum import StrEnum
from typing import Any

from rich.console import Console

from hpsearch_budget._json import json_safe
from hpsearch_budget.errors import HpauditInputError

# Piped output (a file, `| cat`, a CI log) has no terminal width: rich would fit tables into 80
# columns and elide numbers ("1.149e…"). Wide enough for every table; a terminal, or $COLUMNS,
# keeps its own width.
_PIPE_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else _PIPE_WIDTH)
err_console = Console(stderr=True)


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit (2: usage or input error)."""
    print(f"hpaudit: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def print_json(payload: Any) -> None:
    """JSON for scripts: stable key order, NaN/inf as null."""
    sys.stdout.write(json.dumps(json_safe(payload), indent=2, sort_keys=False) + "\n")


def non_negative(value: float, name: str) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise HpauditInputError(f"{name} must be a number >= 0, got {value}")
    return value

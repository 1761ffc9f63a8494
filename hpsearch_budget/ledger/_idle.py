"""Idle windows: what a meter measured while none of its process's trials was running.

DESIGN's conservation (trials + idle == what the counters measured) holds in the ledger only
if idle is written there too. It is one finished row of phase ``idle`` per call, keyed
``idle:<host>:<pid>:<n>`` and without a trial number, so that no reader takes it for a trial;
being a finished row it counts in the study's spent, like any other.
"""

from __future__ import annotations

import itertools
import os
import socket
from typing import TYPE_CHECKING

from hpsearch_budget.meters.base import Measurement

if TYPE_CHECKING:
    from hpsearch_budget.ledger._ledger import Ledger

#: Numbers the idle windows of this process (unique keys across sweeps and ledgers).
_numbers = itertools.count()


def has_idle(idle: Measurement) -> bool:
    """Whether ``idle`` holds anything worth a row (time passed or energy was measured)."""
    return idle.wall_s > 0.0 or any(j != 0.0 for j in idle.by_domain.values())


def write_idle(
    ledger: Ledger,
    study: str,
    idle: Measurement,
    *,
    project: str | None = None,
    user: str | None = None,
    checkpoint_interval_s: float = 30.0,
) -> int | None:
    """Write ``idle`` as one finished ``phase="idle"`` row of ``study``; its window id, or
    None when there was nothing to write."""
    if not has_idle(idle):
        return None
    key = f"idle:{socket.gethostname()}:{os.getpid()}:{next(_numbers)}"
    window_id = ledger.open_window(
        study,
        key,
        phase="idle",
        project=project,
        user=user,
        checkpoint_interval_s=checkpoint_interval_s,
    )
    ledger.finalize(window_id, idle, status="complete")
    return window_id

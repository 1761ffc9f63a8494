"""What a window's row would record now, when the ledger could not be written: an estimate
the integrations show while a write waits (the next write charges the same energy)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpsearch_budget.budget import Cost

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger


def unwritten_cost(ledger: Ledger, written: Cost, energy_j: float) -> Cost:
    """The cost ``ledger`` would record for a window now at ``energy_j`` (cumulative) whose
    last write recorded ``written``: the energy since then charged at the ledger's carbon
    model now, as :meth:`Ledger.checkpoint` does."""
    delta_j = energy_j - written.energy_j
    if delta_j <= 0.0:
        return written
    fp = ledger.footprint(delta_j, ledger.now())
    return Cost(
        written.energy_j + delta_j, written.co2e_g + fp.co2e_g, written.usd + fp.usd, written.gpu_s
    )

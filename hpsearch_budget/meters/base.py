"""The meter contract: where joules come from.

A :class:`Meter` reads cumulative joules per *domain* ("gpu:0", "cpu:package-0",
"dram:package-0", "cpu", "ram", ...) together with a monotonic timestamp. Energy over a window
is the difference of two readings. Every domain carries a :class:`Source` so that an estimate is
never presented as a measurement.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from hpsearch_budget.errors import MeterError


class Source(StrEnum):
    """How an energy figure was obtained, from most to least trustworthy."""

    MEASURED = "measured"  # a hardware energy counter (NVML total energy, RAPL)
    INTEGRATED = "integrated"  # sampled power integrated over time
    ESTIMATED = "estimated"  # a model, e.g. per-core watts x CPU time
    REPLAYED = "replayed"  # a recorded or simulated trace (tests, benchmarks)


# When domains of different sources are combined, the combination is only as good as its
# weakest part.
_SOURCE_RANK = {Source.MEASURED: 0, Source.INTEGRATED: 1, Source.REPLAYED: 2, Source.ESTIMATED: 3}


def weakest(sources: Mapping[str, Source] | list[Source]) -> Source | None:
    """The least trustworthy source among ``sources`` (None when empty)."""
    values = list(sources.values()) if isinstance(sources, Mapping) else list(sources)
    if not values:
        return None
    return max(values, key=lambda s: _SOURCE_RANK[Source(s)])


def _difference(domain: str, end_j: float, begin_j: float) -> float:
    """Joules of one domain between two readings.

    A NaN or infinite difference is a broken counter, not zero energy: clamping it to 0 J (as a
    counter that went backwards is) would report a confident zero, and carrying NaN on would
    fail later in attribution or the ledger with no word of which domain broke. So it stops here.
    """
    joules = end_j - begin_j
    if not math.isfinite(joules):
        raise MeterError(
            f"meter domain {domain!r} read {begin_j!r} J then {end_j!r} J: its counter is "
            "broken, so this window's energy is unknown; fix the meter's read() or leave the "
            "domain out of domains()"
        )
    return max(0.0, joules)


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative energy per domain at one instant.

    ``time_s`` is ``time.monotonic()`` (or the simulated clock of a replay meter).
    """

    time_s: float
    energy_j: Mapping[str, float]
    sources: Mapping[str, Source]

    def __sub__(self, earlier: Reading) -> Measurement:
        domains = set(self.energy_j) & set(earlier.energy_j)
        by_domain = {
            d: _difference(d, self.energy_j[d], earlier.energy_j[d]) for d in sorted(domains)
        }
        return Measurement(
            wall_s=max(0.0, self.time_s - earlier.time_s),
            by_domain=by_domain,
            sources={d: self.sources[d] for d in by_domain},
        )


@dataclass(frozen=True, slots=True)
class Measurement:
    """Energy spent over one window, per domain, with each domain's source."""

    wall_s: float
    by_domain: Mapping[str, float] = field(default_factory=dict)
    sources: Mapping[str, Source] = field(default_factory=dict)

    @property
    def energy_j(self) -> float:
        # fsum: the total of many small domains must not drift (attribution checks conservation).
        return math.fsum(self.by_domain.values())

    @property
    def source(self) -> Source | None:
        """The weakest source among the domains: the label a single total must carry."""
        return weakest(self.sources)

    def __add__(self, other: Measurement) -> Measurement:
        by_domain = dict(self.by_domain)
        for d, e in other.by_domain.items():
            by_domain[d] = by_domain.get(d, 0.0) + e
        sources = {**self.sources, **other.sources}
        return Measurement(self.wall_s + other.wall_s, by_domain, sources)


class Meter(abc.ABC):
    """One reader per hardware family. Subclasses read counters; they never interpret them."""

    #: The source label of every domain this meter reports.
    source: Source

    #: Why a domain is missing, estimated or incomplete (a fallback, a lost device, a reset
    #: counter): one line each, for reports, so that no figure is ever silently zero.
    notes: Sequence[str] = ()

    #: Whether energy accrues with the wall clock only (hardware counters, the estimate): a
    #: read a few milliseconds old then lacks a few milliseconds of power, and hot paths far
    #: from any limit may reuse it. False for a simulated clock (``ReplayMeter``) and for any
    #: meter that does not say: every read of theirs is fresh.
    wall_clock: bool = False

    @abc.abstractmethod
    def domains(self) -> list[str]:
        """Names of the energy domains this meter reports."""

    @abc.abstractmethod
    def read(self) -> Reading:
        """Cumulative joules per domain since an arbitrary origin, and the time."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles and stop threads."""

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A meter on a simulated clock, for tests and benchmarks: labelled ``replayed``.

Energy accrues only when you say so: :meth:`ReplayMeter.advance` moves the clock and charges
power x time (a constant, one constant per domain, a function of the simulated time, or a
recorded trace), :meth:`ReplayMeter.charge` adds joules directly. Nothing depends on the real
clock or the machine, so results are exact and repeatable.

Example::

    >>> from hpsearch_budget.meters import ReplayMeter
    >>> meter = ReplayMeter(power_w=300)
    >>> begin = meter.read()
    >>> meter.advance(10.0)
    10.0
    >>> meter.charge(500.0)
    >>> m = meter.read() - begin
    >>> m.energy_j, m.wall_s, m.by_domain
    (3500.0, 10.0, {'replay': 3500.0})

Several domains, e.g. to exercise attribution::

    >>> meter = ReplayMeter(power_w={"gpu:0": 250.0, "cpu:package-0": 100.0})
    >>> _ = meter.advance(2.0)
    >>> meter.read().energy_j
    {'gpu:0': 500.0, 'cpu:package-0': 200.0}

A recorded trace of (time s, power W) points, linear in between, last value held::

    >>> meter = ReplayMeter.from_trace([(0, 100.0), (10, 300.0)])
    >>> _ = meter.advance(20.0)
    >>> meter.read().energy_j["replay"]
    5000.0
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.meters.base import Meter, Reading, Source

Power = float | Mapping[str, float] | Callable[[float], float]

#: Simpson intervals per advance() for a power formula: exact for polynomials up to cubic.
_SIMPSON_N = 64


class ReplayMeter(Meter):
    """Charges energy on a simulated clock that only :meth:`advance` moves.

    Args:
        power_w: W drawn while the clock advances: a number (one domain), a mapping
            domain -> W, or a function of the simulated time (s) -> W (one domain).
        domain: the domain name when ``power_w`` is a number or a function.
        start_s: the clock's starting time.
        realtime: also advance the clock by real elapsed time at each read (for an
            integration test that should accrue energy without calling advance()).
    """

    source = Source.REPLAYED

    def __init__(
        self,
        power_w: Power = 0.0,
        *,
        domain: str = "replay",
        start_s: float = 0.0,
        realtime: bool = False,
    ) -> None:
        if isinstance(power_w, Mapping):
            self._power: dict[str, float | Callable[[float], float]] = dict(power_w)
        else:
            self._power = {domain: power_w}
        for name, p in self._power.items():
            if not callable(p) and not (math.isfinite(p) and p >= 0):
                raise HpauditInputError(f"power_w for {name!r} must be >= 0 W, got {p}")
        self._domain = domain if domain in self._power else next(iter(self._power))
        self._energy = dict.fromkeys(self._power, 0.0)
        self._clock = float(start_s)
        self._lock = threading.Lock()
        self._realtime = time.monotonic() if realtime else None
        self._breaks: list[float] = []  # a trace's points: Simpson is exact between them

    @classmethod
    def from_trace(
        cls,
        trace: Sequence[tuple[float, float]] | str | os.PathLike[str],
        *,
        domain: str = "replay",
    ) -> ReplayMeter:
        """A meter replaying (time s, power W) points, linear in between, last value held.

        ``trace`` is a sequence of pairs or a CSV file with columns ``time_s,power_w``.
        The clock starts at the first point's time.
        """
        points = _load_trace(trace)
        times = [t for t, _ in points]
        watts = [p for _, p in points]

        def power(t: float) -> float:
            i = bisect_right(times, t)
            if i == 0:
                return watts[0]
            if i == len(times):
                return watts[-1]
            t0, t1 = times[i - 1], times[i]
            return watts[i - 1] + (watts[i] - watts[i - 1]) * (t - t0) / (t1 - t0)

        meter = cls(power, domain=domain, start_s=times[0])
        meter._breaks = times  # integrate piecewise so that the linear pieces are exact
        return meter

    @property
    def time_s(self) -> float:
        """The simulated clock."""
        return self._clock

    def domains(self) -> list[str]:
        return list(self._power)

    def advance(self, seconds: float) -> float:
        """Move the clock forward and charge power x time; returns the new clock."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise HpauditInputError(f"advance() takes seconds >= 0, got {seconds}")
        with self._lock:
            self._advance(seconds)
            return self._clock

    def _advance(self, seconds: float) -> None:
        t0, t1 = self._clock, self._clock + seconds
        for name, p in self._power.items():
            self._energy[name] += p * seconds if not callable(p) else self._integral(p, t0, t1)
        self._clock = t1

    def _integral(self, power: Callable[[float], float], t0: float, t1: float) -> float:
        cuts = [t0, *(b for b in self._breaks if t0 < b < t1), t1]
        return math.fsum(_simpson(power, a, b) for a, b in itertools.pairwise(cuts))

    def charge(self, joules: float, domain: str | None = None) -> None:
        """Add ``joules`` to a domain (default: the meter's main domain) without moving time."""
        if not (math.isfinite(joules) and joules >= 0):
            raise HpauditInputError(f"charge() takes joules >= 0, got {joules}")
        name = self._domain if domain is None else domain
        with self._lock:
            if name not in self._energy:
                raise HpauditInputError(
                    f"unknown domain {name!r}: this meter has {sorted(self._energy)}"
                )
            self._energy[name] += joules

    def read(self) -> Reading:
        with self._lock:
            if self._realtime is not None:
                now = time.monotonic()
                self._advance(now - self._realtime)
                self._realtime = now
            return Reading(
                self._clock, dict(self._energy), dict.fromkeys(self._energy, Source.REPLAYED)
            )


def _simpson(f: Callable[[float], float], a: float, b: float) -> float:
    if b <= a:
        return 0.0
    h = (b - a) / _SIMPSON_N
    odd = math.fsum(f(a + i * h) for i in range(1, _SIMPSON_N, 2))
    even = math.fsum(f(a + i * h) for i in range(2, _SIMPSON_N, 2))
    return h / 3 * (f(a) + 4 * odd + 2 * even + f(b))


def _load_trace(
    trace: Sequence[tuple[float, float]] | str | os.PathLike[str],
) -> list[tuple[float, float]]:
    if isinstance(trace, str | os.PathLike):
        path = Path(trace)
        try:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            points = [(float(r["time_s"]), float(r["power_w"])) for r in rows]
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise HpauditInputError(
                f"cannot read the power trace {path} ({exc}): it needs a CSV header "
                "time_s,power_w and numbers below"
            ) from exc
    else:
        points = [(float(t), float(p)) for t, p in trace]
    if not points:
        raise HpauditInputError("a power trace needs at least one (time_s, power_w) point")
    if any(b[0] <= a[0] for a, b in itertools.pairwise(points)):
        raise HpauditInputError("trace times must increase strictly; sort the trace")
    if any(not (math.isfinite(p) and p >= 0) for _, p in points):
        raise HpauditInputError("trace power must be finite and >= 0 W")
    return points

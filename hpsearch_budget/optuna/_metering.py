"""One meter shared by every trial this process runs, split between concurrent trials.

With ``study.optimize(..., n_jobs=4)`` four trials run as threads of one process and one meter
sees their summed energy. Reading it per trial would charge each trial for all four. Instead
every read advances one shared reading and splits the energy since the previous read equally
between the windows open during that interval, so the trials' energies add up to what the
meter measured (conservation) and none is counted twice.

What the meter measures while none of the process's windows is open (between trials: the
sampler, Optuna's storage, a GPU idling) is kept as idle (:meth:`SharedMeter.take_idle`), so
that trials + idle add up to what the meter measured; ``metered`` writes it to the ledger as
``phase="idle"`` rows. A gap longer than ``max_gap_s`` (the metered objective's
``checkpoint_interval_s``) is not the sweep's -- a notebook idle between two ``optimize()``
calls -- and is not kept: the next trial's window starts fresh.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from dataclasses import dataclass, field

from hpsearch_budget.attribution import ProcessShareMeter
from hpsearch_budget.meters import Measurement, Meter, Reading, Source
from hpsearch_budget.meters import shared_meter as machine_meter

#: How old (s) a read a report may reuse is, far from every limit (see SharedMeter.measure).
REUSE_S = 0.01


@dataclass
class _Window:
    start_s: float
    by_domain: dict[str, float]
    sources: dict[str, Source] = field(default_factory=dict)


class SharedMeter:
    """Per-window cumulative measurements from one meter shared by concurrent trials.

    >>> from hpsearch_budget.meters import Meter, Reading, Source
    >>> class Fake(Meter):
    ...     source = Source.REPLAYED
    ...     t = 0.0
    ...     def domains(self): return ["replay"]
    ...     def read(self):
    ...         self.t += 1.0
    ...         return Reading(self.t, {"replay": 10.0 * self.t}, {"replay": Source.REPLAYED})
    >>> shared = SharedMeter(Fake())
    >>> a = shared.open(); b = shared.open()   # 10 J pass between the two opens: a alone
    >>> shared.close(a).energy_j               # then 10 J split between a and b
    15.0
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._lock = threading.Lock()
        self._last: Reading | None = None
        self._read_at = -float("inf")  # time.monotonic() of the last read
        self._open: dict[int, _Window] = {}
        self._ids = itertools.count()
        self._idle = Measurement(0.0)

    @property
    def idle_wall_s(self) -> float:
        """Seconds of idle kept and not yet taken: a lock-free read, for the trial's hot path."""
        return self._idle.wall_s

    def _advance(self, max_gap_s: float = math.inf) -> Reading:
        """Read the meter and hand the energy since the last read to the open windows; with
        none open, keep it as idle unless the gap is longer than ``max_gap_s``."""
        now = self.meter.read()
        if self._last is not None and self._open:
            delta = now - self._last
            share = 1.0 / len(self._open)
            for window in self._open.values():
                for domain, joules in delta.by_domain.items():
                    window.by_domain[domain] = window.by_domain.get(domain, 0.0) + joules * share
                window.sources.update(delta.sources)
        elif self._last is not None:
            gap = now - self._last
            if gap.wall_s <= max_gap_s:  # longer: not the sweep's (a notebook between sweeps)
                self._idle = self._idle + gap
        self._last, self._read_at = now, time.monotonic()
        return now

    def take_idle(self, max_gap_s: float = math.inf) -> Measurement:
        """The idle kept so far, handed over and forgotten here (a sweep's end: the gap since
        the last read is read first, when no window is open and it is not over ``max_gap_s``)."""
        with self._lock:
            if not self._open and self._last is not None:
                self._advance(max_gap_s)
            idle, self._idle = self._idle, Measurement(0.0)
            return idle

    def keep_idle(self, idle: Measurement) -> None:
        """Put back idle that :meth:`take_idle` handed over but could not be recorded."""
        with self._lock:
            self._idle = idle + self._idle

    def open(self, max_gap_s: float = math.inf) -> int:
        """Start a window; returns its token. A gap with no window open longer than
        ``max_gap_s`` is not kept as idle."""
        with self._lock:
            now = self._advance(max_gap_s)
            token = next(self._ids)
            self._open[token] = _Window(
                now.time_s, dict.fromkeys(now.energy_j, 0.0), dict(now.sources)
            )
            return token

    def measure(self, token: int, *, max_age_s: float = 0.0) -> Measurement:
        """Energy of the window so far (cumulative since it opened).

        ``max_age_s`` > 0: a read of a wall-clock meter (:attr:`Meter.wall_clock`) at most that
        old stands for now. Reports that are not written to the ledger (far from every limit,
        inside the trial's reservation) pass :data:`REUSE_S`: a trial that reports every few
        milliseconds pays one read per 10 ms, and what the pruner sees of it lacks at most
        10 ms of power. Every write, and the trial's end, reads afresh.
        """
        with self._lock:
            now = self._last
            reuse = now is not None and max_age_s > 0.0 and self.meter.wall_clock
            if now is None or not (reuse and time.monotonic() - self._read_at <= max_age_s):
                now = self._advance()
            w = self._open[token]
            return Measurement(max(0.0, now.time_s - w.start_s), dict(w.by_domain), dict(w.sources))

    def close(self, token: int) -> Measurement:
        """The window's final measurement; it gets no further share."""
        with self._lock:
            now = self._advance()
            w = self._open.pop(token)
            return Measurement(max(0.0, now.time_s - w.start_s), dict(w.by_domain), dict(w.sources))


_shared_lock = threading.Lock()
_shared: dict[int, SharedMeter] = {}


def shared_meter(meter: Meter | None) -> SharedMeter:
    """The process's one :class:`SharedMeter` for ``meter`` (None: the process's default meter,
    :func:`hpsearch_budget.meters.shared_meter`)."""
    if meter is None:
        meter = _process_meter()
    with _shared_lock:
        found = _shared.get(id(meter))
        if found is None or found.meter is not meter:
            found = _shared[id(meter)] = SharedMeter(meter)
        return found


_process: Meter | None = None


def _process_meter() -> Meter:
    """The process's default meter, as this worker's part of the machine when it reads
    machine-wide counters (RAPL): other workers on the machine pay their own part."""
    global _process
    machine = machine_meter()
    with _shared_lock:
        inner = _process.meter if isinstance(_process, ProcessShareMeter) else _process
        if _process is None or inner is not machine:
            _process = ProcessShareMeter(machine) if ProcessShareMeter.needed(machine) else machine
        return _process


def _forget() -> None:
    # A forked worker starts with no open windows; the parent's locks may be held.
    global _shared_lock, _process
    _shared_lock = threading.Lock()
    _shared.clear()
    _process = None


os.register_at_fork(after_in_child=_forget)

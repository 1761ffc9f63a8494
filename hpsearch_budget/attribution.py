"""Split one machine's measured energy between trials that ran at the same time.

The rules (DESIGN.md, "Measurement"):

* a GPU domain (``gpu:<i>``) belongs to the trials that hold it, by their share of it (a trial
  holding half a GPU pays half its energy); the share nobody held is idle. Shares summing to
  more than 1 (an oversubscribed GPU) are scaled down to sum to 1;
* every other domain (CPU package, DRAM, the estimate's ``cpu`` / ``ram``) is split by each
  trial's process-tree CPU seconds over the machine's CPU capacity (cores x wall time); the
  capacity no trial used is idle. With ``cpu_split="used"`` the whole domain is split between
  the trials in proportion to their CPU time (idle only when no trial used any). The
  estimate's ``cpu`` and ``ram`` domains are always split that way: they already count only
  the CPU time the metered processes used, so none of it is idle capacity;
* conservation, per domain: ``math.fsum(trials) + idle == measured`` exactly: idle is what is
  left after the trials, with the rounding residue put into idle (see ``_split``).

Example: three trials on two GPUs and one CPU package over 10 s on a 4-core machine::

    >>> from hpsearch_budget.attribution import Usage, attribute
    >>> from hpsearch_budget.meters import Measurement
    >>> measured = Measurement(10.0, {"gpu:0": 3000.0, "gpu:1": 2000.0, "cpu:package-0": 800.0})
    >>> split = attribute(measured, {
    ...     "a": Usage(cpu_s=10.0, gpus={"gpu:0": 1.0}),
    ...     "b": Usage(cpu_s=5.0, gpus={"gpu:1": 0.5}),
    ...     "c": Usage(cpu_s=5.0, gpus={"gpu:1": 0.25}),
    ... }, cpu_capacity_s=40.0)
    >>> split.energy_j("a"), split.energy_j("b"), split.energy_j("c"), split.idle.energy_j
    (3200.0, 1100.0, 600.0, 900.0)
    >>> split.conserved()
    True
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.meters.base import Measurement, Meter, Reading, Source
from hpsearch_budget.meters.estimate import ProcessTree

if TYPE_CHECKING:
    from hpsearch_budget.ledger import Ledger

CpuSplit = Literal["capacity", "used"]


@dataclass(frozen=True)
class Usage:
    """What one trial used of the machine during a window."""

    #: CPU seconds of the trial's process tree (or thread) within the window.
    cpu_s: float = 0.0
    #: GPU domain -> share of it the trial held, in (0, 1], e.g. ``{"gpu:0": 0.5}``.
    gpus: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cpu_s) and self.cpu_s >= 0):
            raise HpauditInputError(f"cpu_s must be >= 0 s, got {self.cpu_s}")
        for domain, share in self.gpus.items():
            if not domain.startswith("gpu:") or not (0 <= share <= 1):
                raise HpauditInputError(
                    f"gpus takes 'gpu:<index>' -> share in [0, 1], got {domain!r}: {share}"
                )


@dataclass(frozen=True)
class Attribution:
    """The split of one window: per trial, idle, and the measurement it came from."""

    measured: Measurement
    by_trial: Mapping[str, Measurement]
    idle: Measurement

    def energy_j(self, key: str) -> float:
        return self.by_trial[key].energy_j

    @property
    def attributed_j(self) -> float:
        return math.fsum(j for m in self.by_trial.values() for j in m.by_domain.values())

    def conserved(self) -> bool:
        """Per domain, trials + idle == measured exactly (fsum)."""
        return all(
            math.fsum([*(m.by_domain.get(d, 0.0) for m in self.by_trial.values()), idle]) == e
            for d, e in self.measured.by_domain.items()
            for idle in [self.idle.by_domain.get(d, 0.0)]
        )


def _weights(
    domain: str, usage: Mapping[str, Usage], capacity_s: float, cpu_split: CpuSplit
) -> dict[str, float]:
    if domain.startswith("gpu:"):
        held = {k: u.gpus.get(domain, 0.0) for k, u in usage.items()}
        total = math.fsum(held.values())
        return {k: s / total for k, s in held.items()} if total > 1.0 else held
    used = math.fsum(u.cpu_s for u in usage.values())
    by_use = cpu_split == "used" or domain in ("cpu", "ram")
    denominator = used if by_use else max(capacity_s, used)
    if denominator <= 0:
        return dict.fromkeys(usage, 0.0)
    return {k: u.cpu_s / denominator for k, u in usage.items()}


def _split(energy_j: float, weights: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """Trials' parts and idle, with ``fsum(parts) + idle == energy_j`` exactly.

    Every part is rounded to a multiple of ``ulp(energy_j)``, the spacing of floats at the
    measured value (a relative change of ~1e-16). Multiples of it up to ``energy_j`` are exact
    floats, so idle, the measured value minus the parts, is exact too: the rounding residue
    lands in idle and nothing is lost to floating point.
    """
    quantum = math.ulp(energy_j)
    total = round(energy_j / quantum)  # an integer below 2**53: exact
    units = {k: round(energy_j * w / quantum) for k, w in weights.items()}
    excess = sum(units.values()) - total
    if excess > 0:  # weights summed to a hair over 1: take it back from the largest part
        largest = max(units, key=units.__getitem__)
        units[largest] -= excess
    idle = total - sum(units.values())
    return {k: u * quantum for k, u in units.items()}, idle * quantum


def attribute(
    measured: Measurement,
    usage: Mapping[str, Usage],
    *,
    cpu_capacity_s: float | None = None,
    cpu_split: CpuSplit = "capacity",
) -> Attribution:
    """Split ``measured`` (a whole machine over one window) between the trials in ``usage``.

    Args:
        measured: the machine's energy over the window (``reading_end - reading_begin``).
        usage: trial key -> what it used in that window.
        cpu_capacity_s: CPU seconds the machine could give in the window (default: logical
            cores x ``measured.wall_s``).
        cpu_split: ``"capacity"`` (unused CPU capacity is idle) or ``"used"`` (all of it is
            split between the trials by CPU time).
    """
    if cpu_split not in ("capacity", "used"):
        raise HpauditInputError(f"cpu_split must be 'capacity' or 'used', got {cpu_split!r}")
    capacity = (os.cpu_count() or 1) * measured.wall_s if cpu_capacity_s is None else cpu_capacity_s
    trials: dict[str, dict[str, float]] = {k: {} for k in usage}
    idle: dict[str, float] = {}
    for domain, energy_j in measured.by_domain.items():
        parts, idle[domain] = _split(energy_j, _weights(domain, usage, capacity, cpu_split))
        for key, joules in parts.items():
            trials[key][domain] = joules
    sources = dict(measured.sources)
    return Attribution(
        measured=measured,
        by_trial={k: Measurement(measured.wall_s, d, sources) for k, d in trials.items()},
        idle=Measurement(measured.wall_s, idle, sources),
    )


class Attributor:
    """Splits one machine meter between trials that start and stop at any time.

    Every :meth:`start`, :meth:`stop` and :meth:`settle` closes an interval: the meter's
    energy since the previous one is attributed to the trials running in it, by the CPU time
    each used in that interval and the GPUs each held. Cumulative per-trial measurements and
    the idle total always add up to what the meter measured since the first call.

    A trial's CPU time comes from its process tree (``pid``), from a thread of this process
    (``thread``: a ``threading.get_ident()``, for Optuna ``n_jobs > 1``) or from any callable
    returning cumulative CPU seconds (``cpu_s``).

    >>> from hpsearch_budget.meters import ReplayMeter
    >>> meter = ReplayMeter(power_w={"gpu:0": 200.0, "gpu:1": 100.0})
    >>> att = Attributor(meter)
    >>> att.start("a", cpu_s=lambda: 0.0, gpus={"gpu:0": 1.0})
    >>> _ = meter.advance(10.0)
    >>> att.start("b", cpu_s=lambda: 0.0, gpus={"gpu:1": 1.0})
    >>> _ = meter.advance(10.0)
    >>> att.stop("a").energy_j, att.stop("b").energy_j, att.idle.energy_j
    (4000.0, 1000.0, 1000.0)
    """

    def __init__(
        self,
        meter: Meter,
        *,
        cpu_split: CpuSplit = "capacity",
        cores: float | None = None,
    ) -> None:
        self.meter = meter
        self.cpu_split: CpuSplit = cpu_split
        self.cores = float(os.cpu_count() or 1) if cores is None else cores
        self._lock = threading.Lock()
        self._last: Reading | None = None
        self._clocks: dict[str, Callable[[], float]] = {}
        self._cpu_last: dict[str, float] = {}
        self._gpus: dict[str, Mapping[str, float]] = {}
        self._totals: dict[str, Measurement] = {}
        self.idle = Measurement(0.0)
        self._unrecorded = Measurement(0.0)  # idle not yet written by record_idle

    def start(
        self,
        key: str,
        *,
        pid: int | None = None,
        thread: int | None = None,
        cpu_s: Callable[[], float] | None = None,
        gpus: Mapping[str, float] | None = None,
    ) -> None:
        """Begin charging ``key`` (give exactly one of ``pid``, ``thread``, ``cpu_s``)."""
        clock = _cpu_clock(pid, thread, cpu_s)
        Usage(gpus=dict(gpus or {}))  # validates the shares
        with self._lock:
            if key in self._clocks:
                raise HpauditInputError(f"trial {key!r} is already being attributed")
            self._settle()
            self._clocks[key] = clock
            self._cpu_last[key] = clock()
            self._gpus[key] = dict(gpus or {})
            self._totals[key] = Measurement(0.0)

    def settle(self) -> Attribution | None:
        """Attribute the energy since the last call; None on the very first call."""
        with self._lock:
            return self._settle()

    def measurement(self, key: str) -> Measurement:
        """The trial's cumulative measurement so far (settles first)."""
        with self._lock:
            self._settle()
            return self._totals[key]

    def stop(self, key: str) -> Measurement:
        """Stop charging ``key``; returns its cumulative measurement."""
        with self._lock:
            self._settle()
            del self._clocks[key], self._cpu_last[key], self._gpus[key]
            return self._totals.pop(key)

    def _settle(self) -> Attribution | None:
        now = self.meter.read()
        last, self._last = self._last, now
        if last is None:
            return None
        measured = now - last
        usage = {}
        for key, clock in self._clocks.items():
            try:
                cpu = clock()
            except OSError:  # the thread or process ended: it used nothing more
                cpu = self._cpu_last[key]
            usage[key] = Usage(max(0.0, cpu - self._cpu_last[key]), self._gpus[key])
            self._cpu_last[key] = cpu
        split = attribute(
            measured,
            usage,
            cpu_capacity_s=self.cores * measured.wall_s,
            cpu_split=self.cpu_split,
        )
        for key, part in split.by_trial.items():
            self._totals[key] = self._totals[key] + part
        self.idle = self.idle + split.idle
        self._unrecorded = self._unrecorded + split.idle
        return split

    def record_idle(
        self,
        ledger: Ledger,
        study: str,
        *,
        project: str | None = None,
        user: str | None = None,
    ) -> int | None:
        """Write the idle not yet recorded (settled first) to ``ledger`` as one finished row of
        ``study`` with phase ``idle``, so that the study's rows add up to what the meter
        measured; its window id, or None when there was nothing new. For trials metered in
        one process by this attributor and written to the ledger by hand: call it at the end,
        or now and then. :attr:`idle` stays the total since the first call."""
        from hpsearch_budget.ledger._idle import write_idle

        with self._lock:
            self._settle()
            idle, self._unrecorded = self._unrecorded, Measurement(0.0)
        try:
            return write_idle(ledger, study, idle, project=project, user=user)
        except BaseException:
            with self._lock:  # not written: the next call writes it
                self._unrecorded = idle + self._unrecorded
            raise


def _cpu_clock(
    pid: int | None, thread: int | None, cpu_s: Callable[[], float] | None
) -> Callable[[], float]:
    given = [x is not None for x in (pid, thread, cpu_s)]
    if sum(given) != 1:
        raise HpauditInputError("start() takes exactly one of pid=, thread= or cpu_s=")
    if cpu_s is not None:
        return cpu_s
    if thread is not None:
        clock_id = time.pthread_getcpuclockid(thread)
        return lambda: time.clock_gettime(clock_id)
    tree = ProcessTree(pid)
    return lambda: tree.sample()[0]


def machine_wide(domain: str) -> bool:
    """Whether a meter's ``domain`` counts the whole device or package (hardware counters:
    ``gpu:<i>``, ``cpu:package-<n>``, ``dram:package-<n>``) rather than only the metered
    processes (the estimate's ``cpu`` and ``ram``, a replay)."""
    return domain.startswith(("gpu:", "cpu:package-", "dram:package-"))


class ProcessShareMeter(Meter):
    """This process tree's part of a machine-wide meter: one worker among several on a machine.

    A RAPL package counter sees every process on the machine, and a GPU held by two Ray trials
    (``{"gpu": 0.5}``) sees both: metering each worker with the machine's meter would charge
    each for all of them. Each read attributes the energy since the previous read as
    :func:`attribute` does with this worker as the only trial: a package or DRAM domain by the
    tree's CPU seconds over the machine's capacity (``cores`` x wall time; the rest is other
    processes' or idle), a GPU domain by ``gpu_share``; the process-scoped domains (the
    estimate's ``cpu`` and ``ram``) stay whole. Readings are cumulative, as any meter's.

    >>> from hpsearch_budget.meters import ReplayMeter
    >>> machine = ReplayMeter(power_w={"cpu:package-0": 100.0, "gpu:0": 200.0, "ram": 3.0})
    >>> used = [0.0]
    >>> mine = ProcessShareMeter(machine, cpu_s=lambda: used[0], gpu_share=0.5, cores=4)
    >>> start = mine.read()
    >>> _ = machine.advance(10.0); used[0] = 20.0   # 2 of 4 cores busy for 10 s
    >>> (mine.read() - start).by_domain
    {'cpu:package-0': 500.0, 'gpu:0': 1000.0, 'ram': 30.0}
    """

    def __init__(
        self,
        meter: Meter,
        *,
        pid: int | None = None,
        cpu_s: Callable[[], float] | None = None,
        gpu_share: float = 1.0,
        cores: float | None = None,
    ) -> None:
        if not (0.0 < gpu_share <= 1.0):
            raise HpauditInputError(f"gpu_share must be in (0, 1], got {gpu_share!r}")
        self.meter = meter
        self.gpu_share = float(gpu_share)
        self.cores = float(os.cpu_count() or 1) if cores is None else float(cores)
        self.source = getattr(meter, "source", Source.MEASURED)
        self.wall_clock = meter.wall_clock
        self._clock = cpu_s if cpu_s is not None else _cpu_clock(pid or os.getpid(), None, None)
        self._lock = threading.Lock()
        self._last: Reading | None = None
        self._cpu_last = 0.0
        self._total: dict[str, float] = {}

    @classmethod
    def needed(cls, meter: Meter, gpu_share: float = 1.0) -> bool:
        """Whether ``meter`` has a domain this worker shares: a CPU package or DRAM counter,
        or a GPU it holds only part of (else the meter is already this worker's own)."""
        return any(
            machine_wide(d) and (not d.startswith("gpu:") or gpu_share < 1.0)
            for d in meter.domains()
        )

    @property
    def notes(self) -> list[str]:  # type: ignore[override]
        mine = []
        if any(machine_wide(d) and not d.startswith("gpu:") for d in self.domains()):
            mine.append(
                "CPU package / DRAM counters: this worker is charged its process tree's CPU "
                f"time over the machine's {self.cores:g} cores; the rest is other processes' "
                "or idle"
            )
        if self.gpu_share < 1.0 and any(d.startswith("gpu:") for d in self.domains()):
            mine.append(f"GPU counters: this worker holds {self.gpu_share:g} of each GPU")
        return [*self.meter.notes, *mine]

    def domains(self) -> list[str]:
        return self.meter.domains()

    def read(self) -> Reading:
        with self._lock:
            now, cpu = self.meter.read(), self._clock()
            if self._last is not None:
                self._add(now - self._last, max(0.0, cpu - self._cpu_last))
            self._last, self._cpu_last = now, cpu
            energy = {d: self._total.setdefault(d, 0.0) for d in now.energy_j}
            return Reading(now.time_s, energy, dict(now.sources))

    def _add(self, delta: Measurement, cpu_s: float) -> None:
        wide = {d: j for d, j in delta.by_domain.items() if machine_wide(d)}
        gpus = {d: self.gpu_share for d in wide if d.startswith("gpu:")}
        usage = {"worker": Usage(cpu_s, gpus)}
        capacity = self.cores * delta.wall_s
        mine = attribute(Measurement(delta.wall_s, wide), usage, cpu_capacity_s=capacity)
        for d, joules in delta.by_domain.items():
            part = mine.by_trial["worker"].by_domain[d] if d in wide else joules
            self._total[d] = self._total.get(d, 0.0) + part

    def close(self) -> None:
        self.meter.close()

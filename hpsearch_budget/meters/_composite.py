"""The best reader per domain, combined into one meter: :func:`default_meter`.

GPUs come from NVML, CPU packages and DRAM from RAPL, and whatever no counter covers from the
estimate (so a figure is never silently missing). Each fallback is written to ``notes``.

Example::

    >>> from hpsearch_budget.meters import default_meter
    >>> with default_meter(devices=[]) as meter:      # no GPU on this machine
    ...     a = meter.read(); b = meter.read()
    >>> set((b - a).by_domain) <= {"cpu", "ram"} | {d for d in meter.domains()}
    True
    >>> forced = default_meter(prefer="estimate")     # force a reader
    >>> forced.domains()
    ['cpu', 'ram']
    >>> forced.close()
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from hpsearch_budget.errors import HpauditInputError, MeterError
from hpsearch_budget.meters.base import Meter, Reading, Source, weakest
from hpsearch_budget.meters.estimate import EstimateMeter
from hpsearch_budget.meters.nvml import NvmlMeter
from hpsearch_budget.meters.rapl import POWERCAP_ROOT, RaplMeter

log = logging.getLogger("hpsearch_budget.meters")

READERS = ("nvml", "rapl", "estimate")


class CompositeMeter(Meter):
    """Several meters read as one; their domains must not overlap.

    >>> from hpsearch_budget.meters import ReplayMeter
    >>> both = CompositeMeter([ReplayMeter(100, domain="gpu:0"), ReplayMeter(5, domain="ram")])
    >>> both.domains()
    ['gpu:0', 'ram']
    """

    def __init__(self, meters: Sequence[Meter], *, notes: Sequence[str] = ()) -> None:
        seen: set[str] = set()
        for meter in meters:
            overlap = seen & set(meter.domains())
            if overlap:
                raise MeterError(f"two meters report the same domains {sorted(overlap)}")
            seen |= set(meter.domains())
        self.meters = list(meters)
        self._notes = list(notes)
        self.source = weakest([m.source for m in self.meters]) or Source.ESTIMATED
        self.wall_clock = all(m.wall_clock for m in self.meters)

    @property
    def notes(self) -> Sequence[str]:
        """This meter's notes and every part's, current (a part can lose a device later)."""
        return [*self._notes, *(n for m in self.meters for n in m.notes)]

    @notes.setter
    def notes(self, value: Sequence[str]) -> None:
        self._notes = list(value)

    def domains(self) -> list[str]:
        return [d for m in self.meters for d in m.domains()]

    def read(self) -> Reading:
        if len(self.meters) == 1:
            return self.meters[0].read()
        energy: dict[str, float] = {}
        sources: dict[str, Source] = {}
        time_s = None
        for meter in self.meters:
            r = meter.read()
            energy.update(r.energy_j)
            sources.update(r.sources)
            time_s = r.time_s if time_s is None else time_s
        return Reading(time.monotonic() if time_s is None else time_s, energy, sources)

    def close(self) -> None:
        for meter in self.meters:
            meter.close()


def _readers(prefer: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if prefer is None:
        return None
    names = (prefer,) if isinstance(prefer, str) else tuple(prefer)
    unknown = [n for n in names if n not in READERS]
    if unknown or not names:
        raise HpauditInputError(
            f"unknown reader {unknown or names!r}: prefer takes one or more of {list(READERS)}"
        )
    return names


def default_meter(
    devices: Sequence[int | str] | None = None,
    prefer: str | Sequence[str] | None = None,
    *,
    nvml: ModuleType | Any | None = None,
    powercap_root: str | os.PathLike[str] = POWERCAP_ROOT,
) -> CompositeMeter:
    """The best available reader per domain, as one meter (the caller closes it).

    Args:
        devices: GPUs to meter (NVML indices or UUIDs); None: ``CUDA_VISIBLE_DEVICES`` or all;
            ``[]``: none. GPUs named here must be meterable (else :class:`MeterError`).
        prefer: force readers, e.g. ``"estimate"`` or ``("nvml", "estimate")``: exactly
            these are used and a failure raises instead of falling back.
        nvml, powercap_root: where the readers look (tests inject fakes).
    """
    forced = _readers(prefer)
    notes: list[str] = []
    meters: list[Meter] = []
    try:
        if (forced is None or "nvml" in forced) and (devices is None or len(devices) > 0):
            gpu = _try(
                lambda: NvmlMeter(devices, nvml=nvml, strict=devices is not None or bool(forced)),
                "GPU",
                notes,
                must=forced is not None or devices is not None,
            )
            if gpu is not None and not gpu.domains():
                notes.extend(gpu.notes or ["no NVIDIA GPU visible: GPU energy is not metered"])
                gpu.close()
                gpu = None
            meters += [gpu] if gpu is not None else []
        if forced is None or "rapl" in forced:
            rapl = _try(lambda: RaplMeter(powercap_root), "CPU", notes, must=forced is not None)
            meters += [rapl] if rapl is not None else []
        if forced is None or "estimate" in forced:
            covered = {d.split(":")[0] for m in meters for d in m.domains()}
            include = tuple(d for d, c in (("cpu", "cpu"), ("ram", "dram")) if c not in covered)
            if include:
                meters.append(EstimateMeter(include=include))
        if not meters:  # only forced readers can leave nothing: never a silent zero
            raise MeterError(
                f"prefer={list(forced or ())} meters nothing here "
                f"({'; '.join(notes) or 'devices=[] names no GPU'}): name the GPUs with "
                "devices=[...] or add 'estimate' to prefer"
            )
    except BaseException:
        for meter in meters:
            meter.close()
        raise
    return CompositeMeter(meters, notes=notes)


def _try(build: Any, what: str, notes: list[str], *, must: bool) -> Any:
    try:
        return build()
    except MeterError as exc:
        if must:
            raise
        fallback = "not metered" if what == "GPU" else "estimated from CPU time instead"
        notes.append(f"{what} counters unavailable, {what} energy {fallback}: {exc}")
        log.info(notes[-1])
        return None


# -- the process-wide default ----------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: CompositeMeter | None = None


def shared_meter() -> CompositeMeter:
    """This process's default meter, built once and reused (closed at exit, rebuilt after
    ``fork``): what :func:`measure` uses when given no meter. Do not close it."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = default_meter()
        return _shared


def _close_shared() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None


def _forget_shared() -> None:
    # In a forked child the parent's sampler threads do not exist and the process tree is the
    # parent's: start again.
    global _shared, _shared_lock
    _shared, _shared_lock = None, threading.Lock()


atexit.register(_close_shared)
os.register_at_fork(after_in_child=_forget_shared)

"""``measure()``: the energy of a block of code or of each call of a function.

As a context manager::

    >>> from hpsearch_budget import measure
    >>> from hpsearch_budget.meters import ReplayMeter
    >>> meter = ReplayMeter(power_w=300)
    >>> with measure(meter) as m:
    ...     _ = meter.advance(2.0)            # stands for two seconds of training
    >>> m.energy_j, m.by_domain, m.sources["replay"].value, m.wall_s
    (600.0, {'replay': 600.0}, 'replayed', 2.0)

As a decorator: each call is a window; ``m`` holds the last call and ``m.total`` all of them::

    >>> m = measure(meter)
    >>> @m
    ... def epoch():
    ...     return meter.advance(1.0)
    >>> _ = epoch(); _ = epoch()
    >>> m.energy_j, m.total.energy_j, m.calls
    (300.0, 600.0, 2)

With no meter, the process's :func:`shared_meter` is used (GPU by NVML, CPU by RAPL, else the
estimate); ``measure(devices=[0], prefer="nvml")`` builds a dedicated one for the window.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from hpsearch_budget.errors import MeterError
from hpsearch_budget.meters._composite import default_meter, shared_meter
from hpsearch_budget.meters.base import Measurement, Meter, Reading, Source

P = ParamSpec("P")
R = TypeVar("R")


class Measure:
    """One measuring window (or, as a decorator, one per call). Built by :func:`measure`."""

    def __init__(
        self,
        meter: Meter | None = None,
        *,
        devices: Sequence[int | str] | None = None,
        prefer: str | Sequence[str] | None = None,
    ) -> None:
        self._meter_arg = meter
        self._devices = devices
        self._prefer = prefer
        self._meter: Meter | None = None
        self._owned = False
        self._begin: Reading | None = None
        self._result: Measurement | None = None
        self._lock = threading.Lock()
        #: Sum of every finished window (decorator: every call).
        self.total = Measurement(0.0)
        #: Number of finished windows.
        self.calls = 0

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> Measure:
        if self._begin is not None:
            raise MeterError("this measure() window is already open: use a new measure()")
        meter = self._meter_arg
        self._owned = meter is None and (self._devices is not None or self._prefer is not None)
        if meter is None:
            meter = default_meter(self._devices, self._prefer) if self._owned else shared_meter()
        self._meter = meter
        self._result = None
        self._begin = meter.read()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._meter is not None and self._begin is not None
        try:
            result = self._meter.read() - self._begin
        finally:
            self._begin = None
            if self._owned:
                self._meter.close()
        self._finish(result)

    def _finish(self, result: Measurement) -> None:
        with self._lock:
            self._result = result
            self.total = self.total + result
            self.calls += 1

    # -- decorator ---------------------------------------------------------------------------

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            # A fresh window per call, so that concurrent calls do not share one.
            window = Measure(self._meter_arg, devices=self._devices, prefer=self._prefer)
            with window:
                value = func(*args, **kwargs)
            assert window._result is not None
            self._meter = window._meter  # for notes
            self._finish(window._result)
            return value

        wrapper.measure = self  # type: ignore[attr-defined]
        return wrapper

    # -- results -----------------------------------------------------------------------------

    def so_far(self) -> Measurement:
        """The open window's energy up to now (reads the meter)."""
        if self._begin is None or self._meter is None:
            raise MeterError("so_far() needs an open window: call it inside `with measure()`")
        return self._meter.read() - self._begin

    @property
    def measurement(self) -> Measurement:
        """The finished window (the last call, as a decorator), or the open one so far."""
        if self._begin is not None:
            return self.so_far()
        if self._result is None:
            raise MeterError("nothing measured yet: use `with measure() as m:` or @measure()")
        return self._result

    @property
    def energy_j(self) -> float:
        return self.measurement.energy_j

    @property
    def by_domain(self) -> Mapping[str, float]:
        return self.measurement.by_domain

    @property
    def sources(self) -> Mapping[str, Source]:
        return self.measurement.sources

    @property
    def source(self) -> Source | None:
        return self.measurement.source

    @property
    def wall_s(self) -> float:
        return self.measurement.wall_s

    @property
    def notes(self) -> list[str]:
        """Why a domain is estimated or missing (see :attr:`Meter.notes`)."""
        meter = self._meter or self._meter_arg
        return list(meter.notes) if meter is not None else []

    def __repr__(self) -> str:
        if self._result is None:
            return "<measure: nothing measured yet>"
        m = self._result
        return f"<measure: {m.energy_j:.1f} J over {m.wall_s:.3f} s, {m.source}>"


@overload
def measure(meter: Callable[P, R]) -> Callable[P, R]: ...


@overload
def measure(
    meter: Meter | None = None,
    *,
    devices: Sequence[int | str] | None = None,
    prefer: str | Sequence[str] | None = None,
) -> Measure: ...


def measure(
    meter: Any = None,
    *,
    devices: Sequence[int | str] | None = None,
    prefer: str | Sequence[str] | None = None,
) -> Any:
    """Measure a block (``with measure() as m``) or each call of a function (``@measure()``,
    or bare ``@measure``: then ``func.measure`` holds the results). See the module docstring.

    Args:
        meter: the meter to read (default: the process's :func:`shared_meter`).
        devices, prefer: build a dedicated :func:`default_meter` for this window instead.
    """
    if callable(meter) and not isinstance(meter, Meter):
        return Measure()(meter)
    return Measure(meter, devices=devices, prefer=prefer)

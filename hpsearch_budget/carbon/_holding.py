"""Keep charging when an intensity provider fails mid-sweep: hold its last good value.

A ledger charges every checkpoint at the intensity in force *now*. A time series that ends
while a sweep runs, or a live API client whose network drops, would otherwise raise inside a
trial: the trial fails, its row is left running and the sweep stops. A ledger therefore asks
its provider through :class:`HoldingIntensity`: a failure after a first good answer returns
that answer, labelled as held (the rows say so in ``intensity_source``), and is logged once
per kind of failure. A provider that never answered still raises: a broken provider fails
before the first trial runs, not hours later.

>>> from datetime import UTC, datetime, timedelta
>>> from hpsearch_budget.carbon import TimeSeriesIntensity
>>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
>>> held = HoldingIntensity(TimeSeriesIntensity((t0, t0 + timedelta(hours=1)), (300.0, 200.0)))
>>> held.at(t0 + timedelta(minutes=90)).label
'time series (2025)'
>>> held.at(t0 + timedelta(hours=5)).label
'time series (2025), held: provider failed'
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from hpsearch_budget.carbon.intensity import Intensity, IntensityProvider

_log = logging.getLogger(__name__)

#: Appended to a held value's source. One fixed text: a row's ``intensity_source`` lists each
#: distinct label once, so a label per failure time would grow it without bound.
HELD = "held: provider failed"


class HoldingIntensity:
    """``provider.at(when)``, or its last good answer (labelled) once it has failed."""

    def __init__(self, provider: IntensityProvider) -> None:
        self.provider = provider
        self._last: Intensity | None = None
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def at(self, when: datetime) -> Intensity:
        try:
            found = self.provider.at(when)
        except Exception as exc:
            with self._lock:
                last = self._last
                first = type(exc).__name__ not in self._warned
                self._warned.add(type(exc).__name__)
            if last is None:
                raise
            if first:
                _log.warning(
                    "carbon intensity: %s; charging %.4g g/kWh (%s), the last value it gave, "
                    "until it answers again",
                    exc,
                    last.g_per_kwh,
                    last.label,
                )
            return Intensity(last.g_per_kwh, f"{last.label}, {HELD}")
        self._last = found
        return found

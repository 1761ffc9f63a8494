"""A grid-intensity time series read from a CSV file, looked up at the time energy was spent.

The file has two columns, ``UTC timestamp,g_per_kwh`` (an optional header line is skipped).
Timestamps are ISO 8601; those without an offset are read as UTC, those with one are converted.
The series is step-wise: each value holds from its timestamp until the next one, and the last
value holds for as long as the interval before it (hourly data covers its last hour). Looking up
a time outside that span is an error rather than a silent extrapolation. (A ledger charging a
sweep that outlives the file holds the last value instead, labelled as held: see
:class:`~hpsearch_budget.carbon.HoldingIntensity`.)

>>> import tempfile, pathlib
>>> from datetime import UTC, datetime
>>> path = pathlib.Path(tempfile.mkdtemp()) / "grid.csv"
>>> _ = path.write_text("timestamp,g_per_kwh\\n2025-01-01T00:00Z,300\\n2025-01-01T01:00Z,200\\n")
>>> series = TimeSeriesIntensity.from_csv(path)
>>> series.at(datetime(2025, 1, 1, 0, 30, tzinfo=UTC)).g_per_kwh
300.0
>>> series.at(datetime(2025, 1, 1, 1, 59, tzinfo=UTC)).g_per_kwh
200.0
"""

from __future__ import annotations

import bisect
import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hpsearch_budget.carbon.intensity import Intensity
from hpsearch_budget.errors import HpauditInputError

_ROW_HINT = "each row must be `UTC timestamp,g_per_kwh`, e.g. `2025-01-01T00:00Z,312.5`"


def _utc(when: datetime) -> datetime:
    """Naive datetimes are UTC by the library's convention; aware ones are converted."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


@dataclass(frozen=True)
class TimeSeriesIntensity:
    """Step-wise intensity over time. Build it with :meth:`from_csv` or from sorted pairs."""

    times: tuple[datetime, ...]
    values_g_per_kwh: tuple[float, ...]
    source: str = "time series"

    def __post_init__(self) -> None:
        # Same convention as lookups: naive means UTC. (frozen: set through object.)
        object.__setattr__(self, "times", tuple(_utc(t) for t in self.times))
        object.__setattr__(self, "values_g_per_kwh", tuple(map(float, self.values_g_per_kwh)))
        if any(not (math.isfinite(v) and v >= 0) for v in self.values_g_per_kwh):
            raise HpauditInputError(f"{self.source}: values must be numbers >= 0")
        if len(self.times) != len(self.values_g_per_kwh):
            raise HpauditInputError("time series: need one g/kWh value per timestamp")
        if not self.times:
            raise HpauditInputError(f"{self.source}: no data rows; {_ROW_HINT}")
        for earlier, later in zip(self.times, self.times[1:], strict=False):
            if not later > earlier:
                raise HpauditInputError(
                    f"{self.source}: timestamps must increase strictly, "
                    f"but {later.isoformat()} follows {earlier.isoformat()}; sort the file "
                    "and drop duplicates"
                )

    @classmethod
    def from_csv(cls, path: str | Path, *, source: str | None = None) -> TimeSeriesIntensity:
        """Read ``UTC timestamp,g_per_kwh`` rows; one-line error naming the first bad line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise HpauditInputError(f"intensity time series not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise HpauditInputError(f"cannot read intensity time series {path}: {exc}") from None
        times: list[datetime] = []
        values: list[float] = []
        for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            parsed = _parse_row(row, path, lineno, header_allowed=not times)
            if parsed is not None:
                times.append(parsed[0])
                values.append(parsed[1])
        return cls(tuple(times), tuple(values), source or f"time series {path.name}")

    def span(self) -> tuple[datetime, datetime]:
        """The covered interval [start, end): the last step lasts as long as the one before."""
        last_step = self.times[-1] - self.times[-2] if len(self.times) > 1 else timedelta(0)
        return self.times[0], self.times[-1] + last_step

    def at(self, when: datetime) -> Intensity:
        when = _utc(when)
        start, end = self.span()
        inside = start <= when < end or when == self.times[-1]
        if not inside:
            raise HpauditInputError(
                f"{self.source} covers {start.isoformat()} to {end.isoformat()}, "
                f"not {when.isoformat()}; extend the file or pass a static intensity"
            )
        i = bisect.bisect_right(self.times, when) - 1
        return Intensity(self.values_g_per_kwh[i], self.source, self.times[i].year)


def _parse_row(
    row: list[str], path: Path, lineno: int, *, header_allowed: bool
) -> tuple[datetime, float] | None:
    where = f"intensity time series {path.name} line {lineno}"
    if len(row) < 2:
        raise HpauditInputError(f"{where}: expected 2 columns, got {len(row)}; {_ROW_HINT}")
    stamp, raw = row[0].strip(), row[1].strip()
    try:
        when = _utc(datetime.fromisoformat(stamp))
    except ValueError:
        if header_allowed and not _is_number(raw):
            return None  # the header line
        raise HpauditInputError(
            f"{where}: {stamp!r} is not an ISO 8601 timestamp; {_ROW_HINT}"
        ) from None
    try:
        value = float(raw)
    except ValueError:
        raise HpauditInputError(f"{where}: {raw!r} is not a number; {_ROW_HINT}") from None
    if not (math.isfinite(value) and value >= 0):
        raise HpauditInputError(f"{where}: intensity must be a number >= 0 g/kWh, got {raw}")
    return when, value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

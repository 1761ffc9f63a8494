"""CPU package and DRAM energy from RAPL, through the Linux powercap interface.

Each zone ``/sys/class/powercap/intel-rapl:<n>`` (name ``package-<n>``) and its sub-zone named
``dram`` holds ``energy_uj``, a counter in microjoules that wraps to zero after
``max_energy_range_uj``. Domains are ``cpu:package-<n>`` and ``dram:package-<n>``. AMD Zen CPUs
use the same ``intel-rapl`` zones (Linux 5.8+). The ``psys`` zone (whole platform) and the
``intel-rapl-mmio`` duplicates of the package zone are skipped: they would count twice.

Wrap-arounds: what can and cannot be detected
    A counter that wraps is only known modulo its range: from two readings alone, a window with
    ``k`` wraps looks exactly like one with ``k - 1`` (or 0). A single wrap between consecutive
    reads *is* detectable (the value went down) and is added back. So the meter keeps the gap
    between consecutive reads shorter than one wrap period, and then every wrap is counted, as
    many as a long window holds: a poller thread reads the counters every ``poll_s`` seconds
    (default: a quarter of the fastest wrap period at the package's maximum power, at most 60 s;
    the package range, ~262 kJ on Intel, takes over 20 minutes to wrap even at 200 W). Any
    ``read()`` also counts as a poll. When two reads are further apart than a wrap period at
    that maximum power (the poller was stopped, the machine suspended), a second wrap could
    have been missed: that gap is reported in ``notes`` and logged, never silently trusted.

Example::

    >>> from hpsearch_budget.meters import RaplMeter
    >>> meter = RaplMeter()                       # doctest: +SKIP
    >>> a = meter.read(); ...; b = meter.read()   # doctest: +SKIP
    >>> (b - a).by_domain                         # doctest: +SKIP
    {'cpu:package-0': 812.3, 'dram:package-0': 61.0}
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hpsearch_budget.errors import MeterError, MeterPermissionError
from hpsearch_budget.meters.base import Meter, Reading, Source

log = logging.getLogger("hpsearch_budget.meters")

POWERCAP_ROOT = Path("/sys/class/powercap")

#: Upper bound of a package's power when it reports no limit: generous, so that the poll period
#: derived from it errs on the short side (a missed wrap costs ~262 kJ; a poll costs ~10 us).
MAX_PACKAGE_W = 1000.0
#: Longest gap between polls, whatever the wrap period.
MAX_POLL_S = 60.0

_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")

_FIX = (
    "RAPL counters are readable by root only since Linux 5.10 (CVE-2020-8694). To measure CPU "
    "energy run `sudo chmod -R a+r /sys/class/powercap/intel-rapl:*` (until reboot; a udev rule "
    "makes it permanent); without it hpaudit estimates CPU energy from CPU time"
)


def _open_counter(path: Path) -> int:
    """An open descriptor on a sysfs counter; re-read with ``pread`` at offset 0 (cheap)."""
    return os.open(path, os.O_RDONLY)


@dataclass
class _Zone:
    domain: str
    path: Path
    fd: int
    range_uj: int
    max_w: float
    last_uj: int = 0
    total_uj: int = 0
    last_t: float = 0.0

    @property
    def wrap_s(self) -> float:
        """The shortest time the counter can take to wrap (at maximum power)."""
        return self.range_uj / 1e6 / self.max_w


class RaplMeter(Meter):
    """Cumulative joules per CPU package and DRAM domain from RAPL powercap counters.

    Args:
        root: the powercap folder (tests point it at a fake tree with the same layout).
        include: which kinds of domain to report, out of ``"cpu"`` and ``"dram"``.
        poll_s: the poller's period; None: derived from the counters' wrap period (see the
            module docstring); 0: no poller thread (the caller promises to read often enough).

    Raises:
        MeterError: no RAPL zone under ``root`` (not Linux on x86, or a VM / container without
            the counters).
        MeterPermissionError: the counters are not readable; the message gives the fix.
    """

    source = Source.MEASURED
    wall_clock = True

    def __init__(
        self,
        root: str | os.PathLike[str] = POWERCAP_ROOT,
        *,
        include: tuple[str, ...] = ("cpu", "dram"),
        poll_s: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.notes: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._zones: list[_Zone] = []
        self._flagged: set[str] = set()
        try:
            self._discover(include)
            now = time.monotonic()
            for zone in self._zones:
                zone.last_uj, zone.last_t = self._raw(zone), now
        except BaseException:
            self.close()
            raise
        fastest = min(z.wrap_s for z in self._zones)
        self.poll_s = min(MAX_POLL_S, fastest / 4) if poll_s is None else poll_s
        if self.poll_s > 0:
            self._thread = threading.Thread(target=self._poll, name="hpaudit-rapl", daemon=True)
            self._thread.start()

    def _discover(self, include: tuple[str, ...]) -> None:
        names: dict[str, str] = {}
        for path in sorted(self.root.glob("intel-rapl:*")):
            try:
                names[path.name] = (path / "name").read_text().strip()
            except OSError:
                continue
        for zone_id, name in names.items():
            m = _ZONE.match(zone_id)
            if m is None:
                continue
            package = names.get(f"intel-rapl:{m.group(1)}", "")
            if not package.startswith("package-"):
                continue  # psys (whole platform) or an unknown zone: would double count
            if m.group(2) is None and "cpu" in include:
                domain = f"cpu:{package}"
            elif m.group(2) is not None and name == "dram" and "dram" in include:
                domain = f"dram:{package}"
            else:
                continue  # core / uncore sub-zones are already inside the package figure
            # Appended one by one, so that close() releases the open ones if a later one fails.
            self._zones.append(self._zone(domain, self.root / zone_id))
        if not self._zones:
            raise MeterError(
                f"no RAPL package zone under {self.root}: this is not Linux on an Intel/AMD "
                "CPU, or the intel_rapl driver is not loaded (`modprobe intel_rapl_common`), or "
                "a VM hides the counters; use prefer='estimate'"
            )

    def _zone(self, domain: str, folder: Path) -> _Zone:
        path = folder / "energy_uj"
        try:
            fd = _open_counter(path)
        except PermissionError as exc:
            raise MeterPermissionError(f"cannot read {path}: {_FIX}") from exc
        try:
            range_uj = int((folder / "max_energy_range_uj").read_text())
        except (OSError, ValueError) as exc:
            os.close(fd)
            raise MeterError(f"cannot read {folder}/max_energy_range_uj ({exc})") from exc
        max_w = MAX_PACKAGE_W
        with contextlib.suppress(OSError, ValueError):  # no limit published: keep the bound
            limit_uw = int((folder / "constraint_0_max_power_uw").read_text())
            if limit_uw > 0:  # 0 (common for DRAM zones) means no limit published either
                # Twice the package's power limit: a short turbo burst can exceed PL1.
                max_w = max(1.0, 2 * limit_uw / 1e6)
        return _Zone(domain, path, fd, range_uj=range_uj, max_w=max_w)

    def domains(self) -> list[str]:
        return [z.domain for z in self._zones]

    @staticmethod
    def _raw(zone: _Zone) -> int:
        return int(os.pread(zone.fd, 32, 0))

    def read(self) -> Reading:
        with self._lock:
            now = time.monotonic()
            for zone in self._zones:
                self._advance(zone, now)
            energy = {z.domain: z.total_uj / 1e6 for z in self._zones}
        return Reading(now, energy, dict.fromkeys(energy, Source.MEASURED))

    def _advance(self, zone: _Zone, now: float) -> None:
        raw = self._raw(zone)
        delta = raw - zone.last_uj
        if delta < 0:
            delta += zone.range_uj  # one wrap: the counter restarted from 0 after range_uj
        if now - zone.last_t > zone.wrap_s and zone.domain not in self._flagged:
            self._flagged.add(zone.domain)  # one note per domain, not one per read
            message = (
                f"{zone.domain}: {now - zone.last_t:.0f} s between two RAPL reads, longer than "
                f"the counter's shortest wrap period ({zone.wrap_s:.0f} s): a wrap may be missed"
            )
            self.notes.append(message)
            log.warning(message)
        zone.total_uj += delta
        zone.last_uj, zone.last_t = raw, now

    def poll(self) -> None:
        """Read every counter once, so that no wrap goes unseen (the poller calls this)."""
        self.read()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except (OSError, ValueError) as exc:  # a counter vanished (driver unloaded)
                log.warning("RAPL poll failed: %s", exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for zone in self._zones:
            with contextlib.suppress(OSError):
                os.close(zone.fd)
        self._zones = []

"""An estimate for machines without energy counters (CI, laptops, VMs): labelled ``estimated``.

    cpu J = CPU seconds of the process tree x ``watts_per_core``
    ram J = integral of the tree's resident memory (GB) over time x ``watts_per_gb``

The constants and their sources:

``WATTS_PER_CORE = 10.0`` W per fully busy core
    Green Algorithms (Lannelongue, Grealey & Inouye, Advanced Science 2021) charges a busy core
    its CPU's TDP divided by its core count. For common parts that is 4.4 W (AMD EPYC 7763:
    280 W / 64 cores), 7.5 W (Intel Xeon Gold 6148: 150 W / 20; Xeon E5-2683 v4: 120 W / 16)
    and 10.8 W (Core i7-8700: 65 W / 6). We take 10 W, the upper end of the server range,
    because TDP / cores leaves out the uncore power that a busy core also keeps awake; pass
    your own CPU's TDP / cores for a better figure.

``WATTS_PER_GB = 0.3725`` W per GB of resident memory
    Green Algorithms (same paper, after Karyakin & Salem, DaMoN 2017). CodeCarbon's 3 W per
    8 GB (0.375 W/GB) and Cloud Carbon Footprint's 0.392 W/GB agree within 5 %.

Idle power of the machine is not in the model: the figure is what the trial's own work adds.
A window where the trial neither ran nor held memory is charged nothing, and ``notes`` says so.

Which CPU time: ``scope="tree"`` (default) counts a process and all its descendants (a trial
that spawns data loader workers pays for them); ``scope="process"`` only the process;
``scope="thread"`` only the calling thread (``time.thread_time``), for trials that run as
threads of one process (Optuna ``n_jobs > 1``): read such a meter from its own thread only.

Example::

    >>> from hpsearch_budget.meters import EstimateMeter
    >>> meter = EstimateMeter()
    >>> a = meter.read(); _ = sum(i * i for i in range(200_000)); b = meter.read()
    >>> m = b - a
    >>> sorted(m.by_domain), m.source.value
    (['cpu', 'ram'], 'estimated')
    >>> m.energy_j > 0
    True
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import BinaryIO, ClassVar, Literal

import psutil

from hpsearch_budget.errors import MeterError
from hpsearch_budget.meters.base import Meter, Reading, Source

WATTS_PER_CORE = 10.0
WATTS_PER_GB = 0.3725
BYTES_PER_GB = 1e9

Scope = Literal["tree", "process", "thread"]


def _proc_children(pid: int) -> Iterator[int]:
    """Direct children from ``/proc/<pid>/task/<tid>/children``: reads one small file per
    thread instead of every process on the machine (what ``psutil.Process.children`` does)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                text = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        yield from (int(child) for child in text.split())


def _has_proc_children() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


class ProcessTree:
    """CPU seconds and resident bytes of a process and its descendants, cheap to sample.

    The descendants are found again at most every ``rescan_s`` seconds (a walk of /proc);
    between walks the cached ``psutil`` handles are read (one small /proc file each).
    A descendant that ends and is waited for lands in its parent's ``children_*`` CPU times,
    so the total stays continuous; a total that would go down (a reaped grandchild whose
    parent ended first) is held at its maximum, so windows are never negative.

    >>> tree = ProcessTree()
    >>> cpu_s, rss = tree.sample()
    >>> cpu_s >= 0 and rss > 0
    True
    """

    def __init__(self, pid: int | None = None, *, children: bool = True, rescan_s: float = 1.0):
        self.pid = os.getpid() if pid is None else pid
        try:
            self._root = psutil.Process(self.pid)
        except psutil.NoSuchProcess as exc:
            raise MeterError(f"no process with pid {self.pid}: pass a running process") from exc
        self._self = self.pid == os.getpid()
        self._children = children
        self._rescan_s = rescan_s
        self._fast = _has_proc_children()
        self._statm = _open_statm(self.pid)
        self._page = os.sysconf("SC_PAGE_SIZE") if self._statm is not None else 0
        self._procs: dict[int, psutil.Process] = {}
        self._scanned = float("-inf")
        self._max_cpu_s = 0.0
        self.ended = False

    def _rescan(self) -> None:
        if self._fast:
            found: list[int] = []
            stack = [self.pid]
            while stack:
                try:
                    kids = list(_proc_children(stack.pop()))
                except OSError:
                    continue
                found.extend(kids)
                stack.extend(kids)
        else:  # pragma: no cover - kernels without CONFIG_PROC_CHILDREN
            found = [p.pid for p in self._root.children(recursive=True)]
        procs = {}
        for pid in found:
            proc = self._procs.get(pid)
            if proc is None:
                try:
                    proc = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue
            procs[pid] = proc
        self._procs = procs

    def sample(self) -> tuple[float, int]:
        """(CPU seconds since each process started, resident bytes) of the tree, now."""
        now = time.monotonic()
        if self._children and now - self._scanned >= self._rescan_s:
            self._rescan()
            self._scanned = now
        cpu_s, rss = self._own()
        for pid, proc in list(self._procs.items()):
            try:
                t = proc.cpu_times()
                rss += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                # Ended: once waited for, its time shows in its parent's children_* fields.
                del self._procs[pid]
                continue
            cpu_s += t.user + t.system + t.children_user + t.children_system
        self._max_cpu_s = max(self._max_cpu_s, cpu_s)
        return self._max_cpu_s, rss

    def _own(self) -> tuple[float, int]:
        try:
            if self._self:
                t = os.times()  # a syscall, no /proc read
                cpu_s = t.user + t.system
            else:
                c = self._root.cpu_times()
                cpu_s = c.user + c.system
                t = c  # type: ignore[assignment]
            cpu_s += t.children_user + t.children_system if self._children else 0.0
            return cpu_s, self._rss()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self.ended = True
            return self._max_cpu_s, 0
        except psutil.AccessDenied as exc:
            raise MeterError(
                f"cannot read process {self.pid} ({exc}): it belongs to another user; "
                "meter it as that user or as root"
            ) from exc

    def _rss(self) -> int:
        """Resident bytes of the root process: one ``pread`` of its statm file kept open
        (what ``psutil`` reads too, but it opens and parses the file on every call)."""
        if self._statm is not None:
            try:
                fields = os.pread(self._statm.fileno(), 128, 0).split()
                return int(fields[1]) * self._page
            except (OSError, IndexError, ValueError):
                self._statm = None  # the process ended, or an odd /proc: psutil decides
        return int(self._root.memory_info().rss)


def _open_statm(pid: int) -> BinaryIO | None:
    try:
        return open(f"/proc/{pid}/statm", "rb", buffering=0)  # kept open: see _rss
    except OSError:  # pragma: no cover - no /proc (macOS): psutil reads it
        return None


class EstimateMeter(Meter):
    """Estimated joules from CPU time and resident memory; see the module docstring.

    Args:
        pid: the process to meter (default: this one).
        scope: ``"tree"``, ``"process"`` or ``"thread"`` (see the module docstring).
        watts_per_core: power of one fully busy core, in W.
        watts_per_gb: power per GB of resident memory, in W.
        include: domains to report, out of ``"cpu"`` and ``"ram"`` (a composite meter drops
            ``"cpu"`` when RAPL measures the package).
        rescan_s: how often the process tree is walked again for new descendants.
    """

    source = Source.ESTIMATED
    wall_clock = True

    # Open thread-scoped meters: they split the process's memory between them.
    _thread_meters: ClassVar[weakref.WeakSet[EstimateMeter]] = weakref.WeakSet()

    def __init__(
        self,
        pid: int | None = None,
        *,
        scope: Scope = "tree",
        watts_per_core: float = WATTS_PER_CORE,
        watts_per_gb: float = WATTS_PER_GB,
        include: tuple[str, ...] = ("cpu", "ram"),
        rescan_s: float = 1.0,
    ) -> None:
        if scope not in ("tree", "process", "thread"):
            raise MeterError(f"scope must be 'tree', 'process' or 'thread', got {scope!r}")
        if not (0 <= watts_per_core < math.inf and 0 <= watts_per_gb < math.inf):  # NaN too
            raise MeterError(
                f"watts_per_core and watts_per_gb must be finite numbers >= 0 W, got "
                f"{watts_per_core} and {watts_per_gb}"
            )
        if scope == "thread" and pid not in (None, os.getpid()):
            raise MeterError("scope='thread' meters a thread of this process: leave pid unset")
        self._domains: list[str] = [d for d in ("cpu", "ram") if d in include]
        if not self._domains:
            raise MeterError("include must name 'cpu', 'ram' or both")
        self.scope = scope
        self.watts_per_core = watts_per_core
        self.watts_per_gb = watts_per_gb
        self._tree = ProcessTree(pid, children=scope == "tree", rescan_s=rescan_s)
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._ram_j = 0.0
        self._last: tuple[float, int] | None = None  # (time, rss) of the previous read
        what = {"tree": "process-tree", "process": "process", "thread": "thread"}[scope]
        self.notes: list[str] = [
            f"estimated: {what} CPU time x {watts_per_core:g} W/core + resident memory x "
            f"{watts_per_gb:g} W/GB (no hardware counter); idle power not included"
        ]
        if scope == "thread":
            EstimateMeter._thread_meters.add(self)

    @classmethod
    def for_current_thread(cls, **kwargs: float) -> EstimateMeter:
        """A meter of the calling thread's CPU time, e.g. one per Optuna ``n_jobs`` trial."""
        return cls(scope="thread", **kwargs)  # type: ignore[arg-type]

    def domains(self) -> list[str]:
        return list(self._domains)

    def read(self) -> Reading:
        with self._lock:
            now = time.monotonic()
            cpu_s, rss = self._sample()
            if self._last is not None:
                last_t, last_rss = self._last
                gb = 0.5 * (rss + last_rss) / BYTES_PER_GB  # trapezoid between reads
                self._ram_j += self.watts_per_gb * gb * max(0.0, now - last_t)
            self._last = (now, rss)
            values: dict[str, float] = {"cpu": cpu_s * self.watts_per_core, "ram": self._ram_j}
        energy = {d: values[d] for d in self._domains}
        return Reading(now, energy, dict.fromkeys(energy, Source.ESTIMATED))

    def _sample(self) -> tuple[float, int]:
        if self.scope != "thread":
            return self._tree.sample()
        me = threading.get_ident()
        if self._thread is None:
            self._thread = me
        elif self._thread != me:
            raise MeterError(
                "this EstimateMeter(scope='thread') belongs to another thread: create one per "
                "trial thread with EstimateMeter.for_current_thread()"
            )
        _, rss = self._tree.sample()
        # The process's memory is shared by its threads: each open thread meter pays a part.
        return time.thread_time(), rss // max(1, len(EstimateMeter._thread_meters))

    def close(self) -> None:
        EstimateMeter._thread_meters.discard(self)

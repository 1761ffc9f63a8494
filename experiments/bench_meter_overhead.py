"""Cost of metering: one window (begin read + end read + subtraction) per meter kind, and the
CPU the power-sampler thread takes at 10 Hz.

Targets (issue 3): a window under 200 us median; the sampler under 0.5 % of one core.

    python experiments/bench_meter_overhead.py          # full: results/bench_meter_overhead.md
    python experiments/bench_meter_overhead.py --quick  # seconds, for the smoke test

This machine has no GPU and no RAPL: the NVML rows use a fake ``pynvml`` that returns at once
(they time our code around the driver call, not the driver), and the RAPL rows read a fake
powercap tree on the local file system through the same ``pread`` path as sysfs.
experiments/nvml_check.py times the real NVML calls on a GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

from hpsearch_budget.meters import (
    EstimateMeter,
    Meter,
    NvmlMeter,
    RaplMeter,
    ReplayMeter,
    default_meter,
    measure,
)

RESULTS = Path(__file__).parent / "results" / "bench_meter_overhead.md"


class _NvmlError(Exception):
    def __init__(self, value: int) -> None:
        self.value = value


def fake_nvml(gpus: int, *, energy: bool) -> SimpleNamespace:
    """A pynvml stand-in that answers at once (the cost of our code alone)."""
    counter = [0]

    def total_energy(handle: int) -> int:
        if not energy:
            raise _NvmlError(3)
        counter[0] += 1000
        return counter[0]

    return SimpleNamespace(
        NVMLError=_NvmlError,
        NVML_ERROR_NOT_SUPPORTED=3,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: gpus,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: f"GPU-{h:08d}",
        nvmlDeviceGetMigMode=lambda h: [0, 0],
        nvmlDeviceGetTotalEnergyConsumption=total_energy,
        nvmlDeviceGetPowerUsage=lambda h: 250_000,
    )


@contextlib.contextmanager
def fake_powercap(sockets: int) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in range(sockets):
            for zone, name in ((f"intel-rapl:{n}", f"package-{n}"), (f"intel-rapl:{n}:0", "dram")):
                (root / zone).mkdir()
                (root / zone / "name").write_text(name + "\n")
                (root / zone / "energy_uj").write_text("123456789\n")
                (root / zone / "max_energy_range_uj").write_text("262143328850\n")
        yield root


def time_windows(meter: Meter, n: int) -> list[float]:
    """Microseconds per window: begin read, end read, Reading subtraction."""
    for _ in range(min(n, 20)):  # warm caches and the tree scan
        _ = meter.read() - meter.read()
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        begin = meter.read()
        end = meter.read()
        _ = end - begin
        out.append((clock() - t0) / 1000.0)
    return out


def time_measure(meter: Meter | None, n: int) -> list[float]:
    """Microseconds per ``with measure(meter):`` block (None: the shared default meter)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        with measure(meter) as m:
            pass
        _ = m.energy_j
        out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def sampler_overhead(seconds: float, hz: float) -> dict[str, float]:
    """Process CPU time while only the sampler works, minus the same idle interval without it."""

    def cpu_during(build: Callable[[], Meter | None]) -> float:
        meter = build()
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(seconds)
        c1, t1 = time.process_time(), time.monotonic()
        if meter is not None:
            meter.close()
        return (c1 - c0) / (t1 - t0)

    baseline = cpu_during(lambda: None)
    sampler = cpu_during(
        lambda: NvmlMeter(nvml=fake_nvml(8, energy=False), sample_hz=hz, devices=None)
    )
    return {
        "hz": hz,
        "seconds": seconds,
        "baseline_pct": 100 * baseline,
        "sampler_pct": 100 * sampler,
        "overhead_pct": 100 * max(0.0, sampler - baseline),
    }


def run(quick: bool) -> tuple[list[tuple[str, float, float, int]], dict[str, float]]:
    n = 50 if quick else 5000
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    rows = []

    def add(name: str, samples: list[float]) -> None:
        rows.append((name, statistics.median(samples), p95(samples), len(samples)))

    with ReplayMeter(300.0) as m:
        add("ReplayMeter", time_windows(m, n))
    with EstimateMeter() as m:
        add("EstimateMeter (process tree, this process)", time_windows(m, n))
    with EstimateMeter.for_current_thread() as m:
        add("EstimateMeter (current thread)", time_windows(m, n))
    with fake_powercap(2) as root, RaplMeter(root) as m:
        add("RaplMeter (2 sockets, package + dram; fake tree)", time_windows(m, n))
    with NvmlMeter(nvml=fake_nvml(8, energy=True)) as m:
        add("NvmlMeter counter (8 GPUs; fake pynvml)", time_windows(m, n))
    with NvmlMeter(nvml=fake_nvml(8, energy=False)) as m:
        add("NvmlMeter power/sampler (8 GPUs; fake pynvml)", time_windows(m, n))
    with default_meter() as m:
        add(f"default_meter() on this machine ({', '.join(m.domains())})", time_windows(m, n))
    add("with measure(): (shared default meter)", time_measure(None, n))
    sampler = sampler_overhead(1.0 if quick else 30.0, 10.0)
    return rows, sampler


def render(rows: list[tuple[str, float, float, int]], sampler: dict[str, float], cmd: str) -> str:
    lines = [
        "# Meter overhead",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        "shared with other jobs, so timings are noisy.",
        "",
        "One window = begin `read()` + end `read()` + `Reading` subtraction. "
        "Target: median < 200 us.",
        "",
        "| meter | median (us) | p95 (us) | windows |",
        "|---|---:|---:|---:|",
    ]
    for name, median, p, n in rows:
        lines.append(f"| {name} | {median:.1f} | {p:.1f} | {n} |")
    lines += [
        "",
        f"Power-sampler thread at {sampler['hz']:g} Hz over {sampler['seconds']:g} s "
        f"(8 fake GPUs): process CPU {sampler['sampler_pct']:.3f} % of one core vs. "
        f"{sampler['baseline_pct']:.3f} % idle baseline: overhead "
        f"**{sampler['overhead_pct']:.3f} %** (target < 0.5 %).",
        "",
        "NVML rows use a fake `pynvml` (no GPU here): they time hpaudit's code only; a real "
        "`nvmlDeviceGetTotalEnergyConsumption` / `nvmlDeviceGetPowerUsage` call adds the driver's "
        "cost per GPU (run experiments/nvml_check.py on a GPU machine). RAPL rows read a fake "
        "powercap tree through the same `pread` path as sysfs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--out", type=Path, help=f"Markdown output (full default: {RESULTS})")
    args = parser.parse_args(argv)
    rows, sampler = run(args.quick)
    cmd = "python experiments/bench_meter_overhead.py" + (" --quick" if args.quick else "")
    text = render(rows, sampler, cmd)
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(out)  # never a half-written result
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

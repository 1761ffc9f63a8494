"""Real-GPU check of the NVML path (issue 3, item 9): counter vs. integrated power vs. nvidia-smi.

Runs a matrix-multiply loop on one GPU (torch when installed; otherwise numpy on the CPU while
the GPU idles, which still compares the three readings, at idle power) and meters the same
interval three ways at once:

* ``NvmlMeter(mode="counter")``: nvmlDeviceGetTotalEnergyConsumption at begin and end;
* ``NvmlMeter(mode="power")``: the sampler thread integrating nvmlDeviceGetPowerUsage;
* ``nvidia-smi --query-gpu=power.draw -lms 100`` sampled in a subprocess, integrated here.

It also times the real driver calls and a window, and the sampler thread's CPU use. Writes
JSON (default experiments/results/nvml_check.json). Pass criterion: counter and integrated
power within 5 %.

    python experiments/nvml_check.py --gpu 0 --seconds 60
    python experiments/nvml_check.py --fake --quick      # no GPU: exercise the script only
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hpsearch_budget.meters import NvmlMeter

RESULTS = Path(__file__).parent / "results" / "nvml_check.json"


def fake_pynvml() -> SimpleNamespace:
    """A constant-250 W GPU whose counter advances with the real clock (for --fake)."""
    t0 = time.monotonic()

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            self.value = value

    return SimpleNamespace(
        NVMLError=NVMLError,
        NVML_ERROR_NOT_SUPPORTED=3,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: "GPU-fake",
        nvmlDeviceGetName=lambda h: "fake GPU",
        nvmlDeviceGetMigMode=lambda h: [0, 0],
        nvmlDeviceGetTotalEnergyConsumption=lambda h: int(250_000 * (time.monotonic() - t0)),
        nvmlDeviceGetPowerUsage=lambda h: 250_000,
    )


def load(seconds: float, gpu: int, stop: threading.Event) -> str:
    """Keep the GPU (or, without torch, the CPU) busy for ``seconds``; returns what ran."""
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError
    except ImportError:
        import numpy as np

        a = np.random.default_rng(0).standard_normal((512, 512))
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stop.is_set():
            a = np.tanh(a @ a)
        return "numpy matmul on the CPU (GPU idle)"
    dev = torch.device(f"cuda:{gpu}")
    a = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.float16)
    end = time.monotonic() + seconds
    while time.monotonic() < end and not stop.is_set():
        for _ in range(20):
            c = a @ b
        torch.cuda.synchronize(dev)
    del c
    return f"torch fp16 8192x8192 matmul on cuda:{gpu}"


class SmiSampler:
    """Integrates ``nvidia-smi power.draw`` sampled every 100 ms (None when it is absent)."""

    def __init__(self, gpu: int, *, enabled: bool = True) -> None:
        self.samples: list[tuple[float, float]] = []
        self.proc: subprocess.Popen[str] | None = None
        if not enabled or shutil.which("nvidia-smi") is None:
            return
        self.proc = subprocess.Popen(
            [
                *("nvidia-smi", "-i", str(gpu), "--query-gpu=power.draw"),
                *("--format=csv,noheader,nounits", "-lms", "100"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.samples.append((time.monotonic(), float(line.strip())))
            except ValueError:
                continue

    def energy_j(self, t0: float, t1: float) -> float | None:
        pts = [(t, w) for t, w in self.samples if t0 <= t <= t1]
        if len(pts) < 2:
            return None
        joules = sum(0.5 * (w0 + w1) * (b - a) for (a, w0), (b, w1) in itertools.pairwise(pts))
        return joules * (t1 - t0) / (pts[-1][0] - pts[0][0])  # scale to the whole window

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def call_us(fn: Any, n: int) -> float:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return statistics.median(out)


def sampler_cpu_pct(gpu: int, nvml: Any, seconds: float) -> float:
    """% of one core the 10 Hz sampler takes with the real driver, net of an idle baseline."""

    def busy(meter_on: bool) -> float:
        meter = NvmlMeter([gpu], nvml=nvml, mode="power", sample_hz=10.0) if meter_on else None
        t0, c0 = time.monotonic(), time.process_time()
        time.sleep(seconds)
        c1, t1 = time.process_time(), time.monotonic()
        if meter is not None:
            meter.close()
        return (c1 - c0) / (t1 - t0)

    return 100 * max(0.0, busy(True) - busy(False))


def run(gpu: int, seconds: float, fake: bool) -> dict[str, Any]:
    nvml = fake_pynvml() if fake else None
    # Before the load: BLAS threads that spin after a matmul would inflate it.
    sampler_pct = sampler_cpu_pct(gpu, nvml, min(5.0, seconds))
    counter = NvmlMeter([gpu], nvml=nvml, mode="counter")
    power = NvmlMeter([gpu], nvml=nvml, mode="power", sample_hz=10.0)
    smi = SmiSampler(gpu, enabled=not fake)
    nv = counter._nvml
    handle = counter._devices[0].handle
    timing = {
        "energy_call_us": call_us(lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle), 200),
        "power_call_us": call_us(lambda: nv.nvmlDeviceGetPowerUsage(handle), 200),
        "window_us": call_us(lambda: counter.read() - counter.read(), 200),
    }
    time.sleep(0.5)
    stop = threading.Event()
    c0, p0 = counter.read(), power.read()
    what = load(seconds, gpu, stop)
    c1, p1 = counter.read(), power.read()
    smi.close()
    counter.close()
    power.close()
    e_counter = (c1 - c0).energy_j
    e_power = (p1 - p0).energy_j
    e_smi = smi.energy_j(c0.time_s, c1.time_s)
    wall = c1.time_s - c0.time_s
    rel = abs(e_power - e_counter) / e_counter if e_counter else float("nan")
    return {
        "gpu": gpu,
        "fake": fake,
        "load": what,
        "wall_s": wall,
        "counter_j": e_counter,
        "integrated_j": e_power,
        "nvidia_smi_j": e_smi,
        "mean_power_w": e_counter / wall if wall else None,
        "integrated_vs_counter_rel": rel,
        "smi_vs_counter_rel": abs(e_smi - e_counter) / e_counter if e_smi and e_counter else None,
        "pass_within_5pct": rel <= 0.05,
        "sampler_cpu_pct_at_10hz": sampler_pct,
        **timing,
        "host": platform.node(),
        "python": platform.python_version(),
        "command": " ".join(sys.argv),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="1 s of load")
    parser.add_argument("--fake", action="store_true", help="a fake pynvml (no GPU needed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.gpu, 1.0 if args.quick else args.seconds, args.fake)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))
    return 0 if result["pass_within_5pct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

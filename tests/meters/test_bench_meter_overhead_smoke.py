"""Smoke test of experiments/bench_meter_overhead.py in --quick mode."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench_meter_overhead.py"


def test_quick_benchmark_writes_a_table_of_every_meter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("bench_meter_overhead_smoke", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "overhead.md"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    text = out.read_text()
    rows = re.findall(r"^\| (.+?) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", text, re.M)
    names = [r[0] for r in rows]
    assert len(rows) == 8 and any("NvmlMeter counter" in n for n in names)
    assert all(0 < float(median) <= float(p95) for _, median, p95, _ in rows)
    overhead = float(re.search(r"overhead \*\*([\d.]+) %\*\*", text).group(1))  # type: ignore[union-attr]
    assert 0 <= overhead < 5.0  # generous: the machine is shared; the target is 0.5 %
    assert "--quick" in text and capsys.readouterr().out == text


def test_nvml_check_runs_end_to_end_on_a_fake_gpu(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "nvml_check_smoke", SCRIPT.parent / "nvml_check.py"
    )
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    out = tmp_path / "nvml.json"
    assert check.main(["--fake", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # a constant 250 W: the counter and the integrated power agree, at 250 W
    assert result["pass_within_5pct"] is True
    assert result["mean_power_w"] == pytest.approx(250.0, rel=0.01)
    assert result["integrated_j"] == pytest.approx(result["counter_j"], rel=0.05)

"""Efficiency-area fixtures: the experiments folder on sys.path, benchmark data checks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
YAHPO = REPO.parent / "shared" / "benchdata" / "yahpo" / "lcbench" / "model.onnx"

if str(EXPERIMENTS) not in sys.path:
    sys.path.insert(0, str(EXPERIMENTS))


@pytest.fixture
def need_yahpo() -> None:
    if not YAHPO.is_file():
        pytest.skip(f"LCBench surrogate data missing ({YAHPO}); see ../shared/benchdata/README.md")
    pytest.importorskip("yahpo_gym", reason="yahpo-gym not installed: pip install -e '.[bench]'")

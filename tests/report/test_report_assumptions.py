"""The report says where its PUE and intensity came from: the rows, the user, or defaults."""

from __future__ import annotations

import pytest

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.report._assemble import default_assumptions


def _rows(pue: float | None) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for i, energy_j in enumerate((1000.0, 3000.0)):
        row: dict[str, object] = {"number": i, "value": 0.5, "energy_j": energy_j}
        if pue is not None:
            row.update(pue=pue + i * 0.4, g_per_kwh=300.0, intensity_source="FR (OWID 2023)")
        rows.append(row)
    return rows


def test_recorded_pue_and_intensity_are_used_and_labelled() -> None:
    a = default_assumptions(Sweep.from_records("s", _rows(1.1)))
    assert a.pue == pytest.approx((1.1 * 1000 + 1.5 * 3000) / 4000)  # energy-weighted
    assert a.pue_source == "as recorded"
    assert a.intensity.label.startswith("as recorded: FR")


def test_without_recorded_figures_the_defaults_are_named() -> None:
    a = default_assumptions(Sweep.from_records("s", _rows(None)))
    assert a.pue == pytest.approx(1.58) and "default" in a.pue_source
    assert not a.intensity.label.startswith("as recorded")


def test_overrides_win() -> None:
    a = default_assumptions(Sweep.from_records("s", _rows(1.1)), seeds=3)
    assert a.seeds == 3 and a.pue_source == "as recorded"

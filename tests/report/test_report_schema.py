"""The JSON report's schema is versioned, documented field by field, and its maths holds."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic import BaseModel

from hpsearch_budget.report import SCHEMA_VERSION, Report, _model, build_report, load_sweep, render

REPO = Path(__file__).resolve().parents[2]


def _models() -> list[type[BaseModel]]:
    return [
        m
        for m in vars(_model).values()
        if isinstance(m, type)
        and issubclass(m, BaseModel)
        and m.__module__ == _model.__name__
        and not m.__name__.startswith("_")
    ]


def test_every_field_is_documented() -> None:
    doc = (REPO / "docs" / "report-schema.md").read_text()
    missing = [
        f"{m.__name__}.{f}"
        for m in _models()
        for f in m.model_fields
        if not re.search(rf"`{f}`", doc)
    ]
    assert missing == []
    assert f"now **{SCHEMA_VERSION}**" in doc


def test_json_round_trips_through_the_model(study_db: tuple[str, str]) -> None:
    storage, ledger = study_db
    text = render(build_report(load_sweep(storage, ledger=ledger)), "json")
    assert "NaN" not in text and "Infinity" not in text
    again = Report.model_validate_json(text)
    assert again.schema_version == SCHEMA_VERSION == json.loads(text)["schema_version"]
    total = again.rnd.total
    shares = [total.measured_share, total.estimated_share, total.projected_share]
    assert abs(sum(s or 0 for s in shares) - 1) < 1e-9


def test_bench_quick_smoke(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        import bench_report
    finally:
        sys.path.pop(0)
    assert bench_report.main(["--quick", "--trials", "120", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "full report from the ledger" in out and "x baseline" in out

"""The report says where its PUE and intensity came from: the rows, the user, or defaults."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.analysis import Sweep
from hpsearch_budget.carbon import CarbonModel, resolve_intensity
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.optuna import metered
from hpsearch_budget.report._assemble import default_assumptions

from .conftest import run_cli


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


def test_an_optuna_study_without_its_ledger_projects_at_the_rate_it_was_charged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its trials carry CO2e and energy (user attributes) but not the intensity and PUE
    behind them: the report takes the intensity that reproduces the recorded CO2e per kWh at
    the PUE it assumes (or is given), not the world average, and says it was derived."""
    folder = tmp_path
    storage = f"sqlite:///{folder / 'study.db'}"
    carbon = CarbonModel(resolve_intensity(region="FR"), pue=1.1)
    ledger = Ledger(f"sqlite:///{folder / 'ledger.db'}", carbon=carbon)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        sum(range(20_000 + int(x * 20_000)))
        return x

    study = optuna.create_study(study_name="fr", storage=storage)
    study.optimize(metered(objective, ledger), n_trials=6)
    ledger.close()
    charged = carbon.footprint(3.6e6).co2e_g  # g per device kWh: 1.1 x FR's intensity

    def assumptions(*options: str) -> dict:
        argv = ("report", storage, "--no-ledger", "--format", "json", *options)
        code, out, _ = run_cli(capsys, *argv)
        assert code == 0
        return dict(json.loads(out)["rnd"]["assumptions"])

    default = assumptions()
    assert default["pue"] == pytest.approx(1.58)
    assert default["g_per_kwh"] * 1.58 == pytest.approx(charged)
    assert default["intensity_source"].startswith("derived")
    given = assumptions("--pue", "1.25")
    assert given["g_per_kwh"] * 1.25 == pytest.approx(charged)

"""The report's sweep forecast: cost to finish the sweep and of its final training, with an
interval, on real Optuna studies and real ledgers (numbers computed by hand)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpsearch_budget.carbon import CarbonModel, StaticIntensity
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.report import build_report, default_assumptions, load_sweep, render

from .conftest import run_cli

KWH = 3.6e6
# Finished trials (kWh, fate); then one running trial that has spent 0.5 kWh.
FINISHED = [(1.0, "complete"), (2.0, "complete"), (3.0, "pruned"), (4.0, "complete")]
RUNNING_KWH = 0.5


def _measure(kwh: float) -> Measurement:
    return Measurement(2.0, {"gpu:0": kwh * KWH}, {"gpu:0": Source.MEASURED})


def _study(tmp: Path, *, planned: int | None = None, final_kwh: float | None = None) -> tuple:
    """An Optuna study (SQLite) whose trials are ledger windows of known energy."""
    storage, ledger_url = f"sqlite:///{tmp / 'study.db'}", f"sqlite:///{tmp / 'ledger.db'}"
    # 400 g/kWh, PUE 1, 0.1 USD/kWh: 1 kWh = 0.4 kg CO2e = 0.1 USD.
    led = Ledger(
        ledger_url, carbon=CarbonModel(StaticIntensity.of(400.0), pue=1.0, usd_per_kwh=0.1)
    )
    study = optuna.create_study(study_name="s", storage=storage)
    if planned is not None:
        study.set_user_attr("n_trials", planned)

    def window(trial: optuna.trial.Trial) -> int:
        return led.open_window(
            "s", f"s:{trial.number}", trial_number=trial.number, devices=["gpu:0"]
        )

    for kwh, fate in FINISHED:
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        led.finalize(window(trial), _measure(kwh), status=fate, value=x)
        if fate == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, x)
    running = study.ask()
    running.suggest_float("x", 0.0, 1.0)
    led.checkpoint(window(running), _measure(RUNNING_KWH), step=0)
    if final_kwh is not None:
        w = led.open_window("s", "s:final", phase="final")
        led.finalize(w, _measure(final_kwh), status="complete", value=0.1)
    led.close()
    return storage, ledger_url


def _report(storage: str, ledger: str, **kwargs: object):  # type: ignore[no-untyped-def]
    sweep = load_sweep(storage, ledger=ledger)
    a = default_assumptions(sweep, final_epochs=2.0, seeds=3)
    return build_report(sweep, assumptions=a, **kwargs)  # type: ignore[arg-type]


def test_forecast_is_the_hand_computed_one(tmp_path: Path) -> None:
    storage, ledger = _study(tmp_path)
    f = _report(storage, ledger, n_trials=10).forecast
    assert f is not None and f.estimated
    assert (f.n_finished, f.n_running, f.n_remaining, f.n_trials_planned) == (4, 1, 5, 10)
    assert f.n_trials_planned_source == "--n-trials"
    # spent 1 + 2 + 3 + 4 + 0.5; mean finished trial 2.5 kWh: 5 new trials x 2.5, and the
    # running one 2.5 - 0.5 more -> 14.5 to finish, 25 in all.
    assert f.spent.energy_kwh == pytest.approx(10.5)
    assert f.to_finish is not None and f.sweep_total is not None
    assert f.to_finish.runs == 6 and f.sweep_total.runs == 10
    assert f.to_finish.estimate.energy_kwh == pytest.approx(14.5)
    assert f.sweep_total.estimate.energy_kwh == pytest.approx(25.0)
    assert f.sweep_total.estimate.co2e_kg == pytest.approx(10.0)
    assert f.sweep_total.estimate.usd == pytest.approx(2.5)
    # The interval brackets the estimate and is not degenerate (trial costs differ).
    lo, hi = f.sweep_total.low.energy_kwh, f.sweep_total.high.energy_kwh
    assert lo is not None and hi is not None and lo < 25.0 < hi
    assert f.to_finish.low.energy_kwh == pytest.approx(lo - 10.5)
    # Final training: 2 x the median complete trial (1, 2, 4 -> 2 kWh); 3 seed reruns of it.
    assert f.final is not None and f.seeds is not None
    assert f.final.estimate.energy_kwh == pytest.approx(4.0)
    assert f.final.estimate.co2e_kg == pytest.approx(1.6)
    assert f.seeds.estimate.energy_kwh == pytest.approx(12.0)
    # Three complete trials are too few for a 90% interval of their median: none is given.
    assert f.final.low.energy_kwh is None and f.final.high.energy_kwh is None


def test_ledger_source_gives_the_same_forecast(tmp_path: Path) -> None:
    _, ledger = _study(tmp_path)
    f = build_report(load_sweep(ledger, direction="minimize"), n_trials=10).forecast
    assert f is not None and f.sweep_total is not None
    assert f.sweep_total.estimate.energy_kwh == pytest.approx(25.0)


def test_recorded_n_trials_is_used_and_unknown_is_said(tmp_path: Path) -> None:
    for sub in "abc":
        (tmp_path / sub).mkdir()
    f = _report(*_study(tmp_path / "a", planned=8)).forecast
    assert f is not None and f.n_trials_planned == 8 and f.n_remaining == 3
    assert f.n_trials_planned_source == "study user attribute n_trials"
    assert f.sweep_total is not None
    assert f.sweep_total.estimate.energy_kwh == pytest.approx(10.5 + 3 * 2.5 + 2.0)
    # --n-trials overrides the recorded value.
    g = _report(*_study(tmp_path / "b", planned=8), n_trials=6).forecast
    assert g is not None and g.n_trials_planned == 6 and g.n_remaining == 1
    # Without either, the cost to finish is unknown and the report says how to give it.
    rep = _report(*_study(tmp_path / "c"))
    assert rep.forecast is not None and rep.forecast.to_finish is None
    assert rep.forecast.n_trials_planned is None and rep.forecast.final is not None
    assert any("--n-trials" in n for n in rep.notes)
    assert "unknown (pass --n-trials N)" in render(rep, "text")


def test_recorded_final_training_is_not_forecast(tmp_path: Path) -> None:
    f = _report(*_study(tmp_path, final_kwh=3.0), n_trials=10).forecast
    assert f is not None and f.final is None and f.seeds is not None
    assert any("final training recorded" in n for n in f.notes)


def test_no_energy_data_means_no_forecast_and_a_note(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    rep = build_report(load_sweep(storage), n_trials=10)
    assert rep.forecast is None
    assert any(n.startswith("forecast: not made") for n in rep.notes)
    assert "Forecast" not in render(rep, "text")


def test_n_trials_below_trials_run_is_an_input_error(tmp_path: Path) -> None:
    storage, ledger = _study(tmp_path)
    with pytest.raises(HpauditInputError, match="fewer than the 5 trials"):
        _report(storage, ledger, n_trials=4)


def test_cli_every_format_shows_the_forecast_as_estimate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, ledger = _study(tmp_path)
    base = ["report", storage, "--ledger", ledger, "--n-trials", "10", "--seeds", "3"]
    for fmt in ("text", "md", "html"):
        code, out, err = run_cli(capsys, *base, "--format", fmt)
        assert code == 0, err
        assert "Forecast (estimates; 90% interval" in out and "planned: 10 trials" in out
        assert "whole sweep" in out and "seed reruns" in out
        assert "25.0 (" in out  # 25 kWh with its interval beside it
    code, out, _ = run_cli(capsys, *base, "--format", "json")
    f = json.loads(out)["forecast"]
    assert code == 0 and f["estimated"] is True and f["level"] == 0.9
    assert f["sweep_total"]["estimate"]["energy_kwh"] == pytest.approx(25.0)
    assert f["seeds"]["estimate"]["energy_kwh"] == pytest.approx(3 * 2.0)  # final_epochs 1


@pytest.mark.parametrize(("n", "msg"), [("0", "must be >= 1"), ("3", "fewer than the 5")])
def test_cli_bad_n_trials_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], n: str, msg: str
) -> None:
    storage, ledger = _study(tmp_path)
    out_file = tmp_path / "r.json"
    code, _, err = run_cli(
        capsys, "report", storage, "--ledger", ledger, "--n-trials", n, "--out", str(out_file)
    )
    assert code == 2 and msg in err and "Traceback" not in err
    assert not out_file.exists()


def _complete_study(tmp: Path, kwh: list[float]) -> tuple[str, str]:
    """An Optuna study (SQLite) of complete trials whose ledger windows cost ``kwh``."""
    storage, ledger_url = f"sqlite:///{tmp / 'study.db'}", f"sqlite:///{tmp / 'ledger.db'}"
    led = Ledger(ledger_url)
    study = optuna.create_study(study_name="s", storage=storage)
    for e in kwh:
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        w = led.open_window("s", f"s:{trial.number}", trial_number=trial.number)
        led.finalize(w, _measure(e), status="complete", value=x)
        study.tell(trial, x)
    led.close()
    return storage, ledger_url


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_too_few_trials_give_no_final_interval_not_a_narrow_one(tmp_path: Path, n: int) -> None:
    # The range of n trials holds their median trial's cost with chance 1 - 2 x 0.5^n: below
    # 90% for n < 5, so no 90% interval can be drawn from them (1 trial gave a zero-width one).
    rep = _report(*_complete_study(tmp_path, [1.0 + i for i in range(n)]), n_trials=10)
    f = rep.forecast
    assert f is not None and f.final is not None and f.seeds is not None
    assert f.final.estimate.energy_kwh is not None
    for rng in (f.final, f.seeds):
        assert rng.low.energy_kwh is None and rng.high.energy_kwh is None
        assert rng.low.co2e_kg is None and rng.high.co2e_kg is None
    assert any(f"no 90% interval from {n} trial(s)" in note for note in f.notes)
    md = render(rep, "md")
    assert "| final training (median trial) | 2 | " in md and "(no interval)" in md
    assert json.loads(render(rep, "json"))["forecast"]["final"]["low"]["energy_kwh"] is None


def test_five_trials_give_a_final_interval(tmp_path: Path) -> None:
    rep = _report(*_complete_study(tmp_path, [1.0, 2.0, 3.0, 4.0, 5.0]), n_trials=10)
    f = rep.forecast
    assert f is not None and f.final is not None
    lo, hi = f.final.low.energy_kwh, f.final.high.energy_kwh
    assert lo is not None and hi is not None and lo < 2 * 3.0 < hi  # final_epochs 2
    assert not any("no 90% interval" in note for note in f.notes)

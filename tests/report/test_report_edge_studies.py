"""Audit C regressions: studies at the edges (infinite values, ...) on real Optuna storages."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import optuna

from hpsearch_budget.budget import Cost, forecast_sweep
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.meters import Measurement, Source
from hpsearch_budget.report import build_report, load_sweep, render


def test_complete_trials_with_infinite_values_are_said_to_be_left_out(tmp_path: Path) -> None:
    # Optuna completes a trial that returns -inf; in a minimised study it is Optuna's best.
    storage = f"sqlite:///{tmp_path / 'inf.db'}"
    study = optuna.create_study(study_name="inf", storage=storage)
    values = [0.5, float("-inf"), 0.2, 0.9, float("inf"), 0.4]
    study.optimize(lambda t: t.suggest_float("x", 0, 1) * 0 + values[t.number], n_trials=6)
    assert study.best_trial.number == 1
    rep = build_report(load_sweep(storage))
    assert rep.study.states == {"complete": 6}
    # The report's best and statistics use the 4 finite trials: it must say so.
    spread = rep.variance.top_k_spread
    assert rep.study.best_trial == 2 and spread is not None and spread.n == 4
    note = next(n for n in rep.notes if "no finite objective value" in n)
    assert note.startswith("2 complete trial(s)")
    assert "no finite objective value" in render(rep, "md")


def test_a_ledger_gives_the_importances_optuna_does_for_a_numeric_choice(tmp_path: Path) -> None:
    # batch_size from suggest_categorical([16, 32, 64, 128]); the ledger keeps its values but
    # not its distribution. Inferred as the range 16..128, four spikes in it made batch_size
    # 0.97 important from the ledger where Optuna's own distributions make it 0.36.
    storage, ledger_url = f"sqlite:///{tmp_path / 's.db'}", f"sqlite:///{tmp_path / 'l.db'}"
    led = Ledger(ledger_url)
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        batch = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
        value = (x - 0.3) ** 2 + 0.05 * (batch != 16)
        w = led.open_window(
            "s", f"s:{trial.number}", trial_number=trial.number, params=trial.params
        )
        m = Measurement(1.0, {"cpu": 1000.0 * batch}, {"cpu": Source.ESTIMATED})
        led.finalize(w, m, status="complete", value=value)
        return value

    study.optimize(objective, n_trials=40)
    led.close()
    from_optuna = build_report(load_sweep(storage)).sensitivity[0].importances
    from_ledger = build_report(load_sweep(ledger_url, direction="minimize")).sensitivity[0]
    assert from_ledger.target == "objective"
    assert list(from_ledger.importances) == list(from_optuna) == ["x", "batch_size"]
    assert abs(from_ledger.importances["batch_size"] - from_optuna["batch_size"]) < 0.05


def test_all_zero_importances_say_why_in_every_format(tmp_path: Path) -> None:
    # A constant objective: every importance is 0, and they do not sum to 1. JSON carried
    # the reason; Markdown, text and HTML showed bare zeros.
    storage = f"sqlite:///{tmp_path / 'const.db'}"
    study = optuna.create_study(study_name="const", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) * 0 + 1.0, n_trials=8)
    rep = build_report(load_sweep(storage))
    imp = rep.sensitivity[0]
    assert imp.importances == {"x": 0.0} and "did not vary" in imp.note
    for fmt in ("md", "text", "html"):
        assert imp.note in render(rep, fmt), fmt


def test_the_forecast_of_a_large_sweep_stays_small_in_memory() -> None:
    # The report forecasts every sweep: 2000 bootstrap replicates of 6,000 trials were
    # gathered at once, (2000 x 6000 x 4) floats plus temporaries, about 1 GB (20,000: 2.7).
    finished = [Cost(1000.0 + i % 7, 1.0, 0.01, 5.0) for i in range(6000)]
    tracemalloc.start()
    try:
        f = forecast_sweep(finished, 12_000, complete=finished, n_final_runs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f.final is not None and f.low.energy_j < f.total.energy_j < f.high.energy_j
    assert peak < 250e6  # the replicates' indices (96 MB) and a few rows at a time


def test_the_schema_page_gives_the_schema_version_the_json_has() -> None:
    from hpsearch_budget.report._model import SCHEMA_VERSION

    page = Path(__file__).parents[2] / "docs" / "report-schema.md"
    row = next(ln for ln in page.read_text().splitlines() if ln.startswith("| `schema_version`"))
    assert row.split("|")[3].split()[0] == str(SCHEMA_VERSION)


def test_one_complete_trial_reads_as_one_trial_and_no_energy_is_not_a_share(
    tmp_path: Path,
) -> None:
    storage = f"sqlite:///{tmp_path / 'one.db'}"
    study = optuna.create_study(study_name="one", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    text = render(build_report(load_sweep(storage)), "text")
    assert "1 trial:" in text and "1 trials" not in text
    assert "1 complete trial)" in text
    assert "n/a of the sweep" not in text and "unknown: no energy recorded" in text
    assert "of all 1 trials" not in text

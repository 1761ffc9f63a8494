"""metered(): every trial is a ledger window with its fate, energy and user attributes."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.ledger import Ledger
from hpsearch_budget.optuna import MeteredTrial, ObjectiveValueError, metered
from hpsearch_budget.units import j_to_kwh


def _stepper(burn, steps: int = 3, cpu_s: float = 0.01):
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -5, 5)
        for step in range(steps):
            burn(cpu_s)
            trial.report(x**2 + 1.0 / (step + 1), step)
        return x**2

    return objective


def test_rows_attrs_and_energy_match(sqlite_url, replay_meter, spend):
    ledger = Ledger(sqlite_url)
    study = optuna.create_study(study_name="attrs")
    study.optimize(metered(_stepper(spend, cpu_s=0.02), ledger, replay_meter), n_trials=3)
    rows = ledger.entries(study="attrs").set_index("trial_number")
    assert list(rows["status"]) == ["complete"] * 3
    for t in study.trials:
        row = rows.loc[t.number]
        assert "hpaudit_window" not in t.user_attrs  # the row is found by its trial_key
        assert row["trial_key"] == f"attrs:{t.number}"
        assert t.user_attrs["energy_kwh"] == pytest.approx(j_to_kwh(row["energy_j"]))
        assert t.user_attrs["co2e_kg"] == pytest.approx(row["co2e_g"] / 1000)
        assert t.user_attrs["energy_source"] == "replayed"
        assert row["energy_j"] == pytest.approx(3 * 0.02 * 20)  # 3 steps of 20 ms at 20 W
        assert row["step"] == 2 and row["value"] == pytest.approx(t.value)
        assert row["params"] == t.params
    frame = study.trials_dataframe()
    assert "user_attrs_energy_kwh" in frame.columns


def test_trial_handed_to_objective_is_a_real_trial(sqlite_url, cpu_meter):
    seen = []

    def objective(trial):
        seen.append(trial)
        return trial.suggest_float("x", 0, 1)

    optuna.create_study().optimize(metered(objective, Ledger(sqlite_url), cpu_meter), n_trials=1)
    assert isinstance(seen[0], optuna.trial.Trial) and isinstance(seen[0], MeteredTrial)


def test_pruned_and_failed_trials_are_charged(sqlite_url, replay_meter, spend):
    ledger = Ledger(sqlite_url)

    def objective(trial):
        spend(0.05)
        trial.report(1.0, 0)
        if trial.number == 0:
            raise optuna.TrialPruned()
        raise RuntimeError("out of memory")

    study = optuna.create_study(study_name="fates")
    obj = metered(objective, ledger, replay_meter)
    study.optimize(obj, n_trials=1)
    with pytest.raises(RuntimeError, match="out of memory"):
        study.optimize(obj, n_trials=1)
    rows = ledger.entries(study="fates").set_index("trial_number")
    assert rows.loc[0, "status"] == "pruned" and rows.loc[1, "status"] == "failed"
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.FAIL]
    assert rows["energy_j"].tolist() == [pytest.approx(1.0)] * 2  # 50 ms at 20 W each
    assert study.trials[1].user_attrs["energy_kwh"] > 0  # the failed trial is still charged


@pytest.mark.parametrize(
    ("returned", "match"),
    [(None, "returned None"), (float("nan"), "returned NaN"), ((1.0, 2.0), "returned 2 value")],
)
def test_bad_objective_values_are_clear_errors(sqlite_url, cpu_meter, returned, match):
    ledger = Ledger(sqlite_url)
    study = optuna.create_study(study_name="bad")
    with pytest.raises(ObjectiveValueError, match=match):
        study.optimize(metered(lambda t: returned, ledger, cpu_meter), n_trials=1)
    assert ledger.entries(study="bad")["status"].tolist() == ["failed"]
    assert study.trials[0].state == TrialState.FAIL
    assert isinstance(ObjectiveValueError("x"), HpauditInputError)


def test_energy_as_extra_objective(sqlite_url, replay_meter, spend):
    def objective(trial):
        n = trial.suggest_int("n", 1, 4)
        spend(0.01 * n)
        return float(n)

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(
        metered(objective, Ledger(sqlite_url), replay_meter, energy_objective=True), n_trials=4
    )
    for t in study.trials:
        assert len(t.values) == 2
        assert t.values[1] == pytest.approx(t.user_attrs["energy_kwh"])
        assert t.values[1] == pytest.approx(j_to_kwh(0.01 * t.params["n"] * 20))


@pytest.mark.parametrize("directions", [["minimize"], ["minimize", "maximize"]])
def test_energy_objective_direction_conflict(sqlite_url, cpu_meter, directions):
    study = optuna.create_study(directions=directions)
    obj = metered(lambda t: 1.0, Ledger(sqlite_url), cpu_meter, energy_objective=True)
    with pytest.raises(HpauditInputError, match=r"directions=\[\.\.\., 'minimize'\]"):
        study.optimize(obj, n_trials=1)


def test_unopenable_ledger_url_is_a_clear_error(tmp_path: Path, sqlite_url):
    with pytest.raises(LedgerError):
        metered(lambda t: 1.0, f"sqlite:///{tmp_path}/missing-dir/x/ledger.db")
    with pytest.raises(LedgerError, match="unsupported"):
        metered(lambda t: 1.0, "mysql://nobody@nowhere/db")
    with pytest.raises(HpauditInputError, match="objective"):
        metered("not callable", sqlite_url)  # type: ignore[arg-type]


def test_threads_share_the_meter_without_double_counting(sqlite_url, cpu_meter, burn):
    """n_jobs=2: the process's energy is split between concurrent trials, never counted twice."""
    ledger = Ledger(sqlite_url)
    study = optuna.create_study(study_name="threads")
    before = cpu_meter.read()
    study.optimize(metered(_stepper(burn, 4, 0.02), ledger, cpu_meter), n_trials=6, n_jobs=2)
    total = (cpu_meter.read() - before).energy_j
    rows = ledger.entries(study="threads")
    assert len(rows) == 6 and (rows["status"] == "complete").all()
    # every trial burns 80 ms of its own CPU; the sum is at most what the process used
    assert rows["energy_j"].sum() <= total + 1e-6
    assert rows["energy_j"].sum() >= (6 * 4 * 0.02 - 0.01) * 20


@pytest.mark.parametrize("kind", ["rdb", "journal"])
def test_works_with_persistent_storages(tmp_path, sqlite_url, replay_meter, spend, kind):
    if kind == "rdb":
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    else:
        storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    ledger = Ledger(sqlite_url)
    study = optuna.create_study(study_name=kind, storage=storage)
    study.optimize(metered(_stepper(spend), ledger, replay_meter), n_trials=2)
    reloaded = optuna.load_study(study_name=kind, storage=storage)
    assert all(t.user_attrs["energy_kwh"] > 0 for t in reloaded.trials)
    assert len(ledger.entries(study=kind)) == 2


def test_heartbeat_checkpoints_a_silent_trial(sqlite_url, cpu_meter, burn):
    """A step longer than the checkpoint interval is still checkpointed, so the ledger sees the
    trial alive and its energy so far (a crash loses at most one interval)."""
    ledger = Ledger(sqlite_url)
    seen: dict[str, float] = {}

    def objective(trial):
        burn(0.6)  # no report for 3 checkpoint intervals
        row = ledger.entries(study="beat").iloc[0]
        seen["status"], seen["energy_j"] = row["status"], row["energy_j"]
        return 1.0

    obj = metered(objective, ledger, cpu_meter, checkpoint_interval_s=0.2)
    optuna.create_study(study_name="beat").optimize(obj, n_trials=1)
    assert seen["status"] == "running"
    assert seen["energy_j"] > 0.2 * 20 * 0.5
    assert ledger.entries(study="beat")["status"].tolist() == ["complete"]


def test_keyboard_interrupt_is_recorded_as_killed(sqlite_url, cpu_meter):
    ledger = Ledger(sqlite_url)

    def objective(trial):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optuna.create_study(study_name="ki").optimize(
            metered(objective, ledger, cpu_meter), n_trials=1
        )
    assert ledger.entries(study="ki")["status"].tolist() == ["killed"]


def test_checkpoint_without_report_for_multi_objective(sqlite_url, replay_meter, spend):
    ledger = Ledger(sqlite_url)
    costs = []

    def objective(trial):
        spend(0.02)
        costs.append(trial.checkpoint(step=0))
        return 1.0, 2.0

    optuna.create_study(study_name="mo", directions=["minimize", "minimize"]).optimize(
        metered(objective, ledger, replay_meter), n_trials=1
    )
    assert costs[0].energy_j == pytest.approx(0.4)
    row = ledger.entries(study="mo").iloc[0]
    assert row["values"] == [1.0, 2.0]
    assert row["value"] is None or math.isnan(row["value"])


def test_report_in_an_energy_objective_study_says_to_checkpoint(sqlite_url, replay_meter, spend):
    """energy_objective=True makes the study multi-objective, where Optuna has no report: the
    error says what to call instead, in one line; the trial is failed and still charged."""
    ledger = Ledger(sqlite_url)

    def objective(trial):
        spend(0.02)
        trial.report(0.5, 0)
        return 0.5

    study = optuna.create_study(study_name="mo-report", directions=["minimize", "minimize"])
    obj = metered(objective, ledger, replay_meter, energy_objective=True)
    with pytest.raises(NotImplementedError, match=r"trial\.checkpoint\(step\)") as error:
        study.optimize(obj, n_trials=1)
    assert "\n" not in str(error.value) and "energy_objective=True" in str(error.value)
    row = ledger.entries(study="mo-report").iloc[0]
    assert row["status"] == "failed" and row["energy_j"] == pytest.approx(0.4)


def test_objective_setting_energy_kwh_itself_is_warned_once(sqlite_url, replay_meter, caplog):
    """An objective that stores its own energy_kwh (its own meter, say) loses it to metered's
    figure: that is said once, with the attribute to rename, rather than silently."""
    ledger = Ledger(sqlite_url)

    def objective(trial):
        replay_meter.advance(0.05)
        trial.set_user_attr("energy_kwh", 42.0)
        trial.set_user_attr("mine", 1)
        return 1.0

    study = optuna.create_study(
        study_name="clash", storage=f"sqlite:///{Path(sqlite_url[10:]).parent / 's.db'}"
    )
    with caplog.at_level(logging.WARNING, logger="hpsearch_budget.optuna"):
        study.optimize(metered(objective, ledger, replay_meter), n_trials=2)
    rows = ledger.entries(study="clash").set_index("trial_number")
    for t in study.trials:  # the ledger's figure wins, the objective's other attributes stay
        assert t.user_attrs["energy_kwh"] == pytest.approx(j_to_kwh(rows.loc[t.number, "energy_j"]))
        assert t.user_attrs["mine"] == 1
    warned = [r.getMessage() for r in caplog.records if "energy_kwh" in r.getMessage()]
    assert len(warned) == 1 and "rename" in warned[0] and "\n" not in warned[0]


def _fake_rapl(root: Path) -> Path:
    """One CPU package in a powercap folder of the real layout (CI has no RAPL)."""
    zone = root / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


def test_default_meter_charges_a_worker_its_cpu_share_of_a_machine_wide_rapl_package(
    sqlite_url, tmp_path, monkeypatch
):
    """Every worker process on a machine reads the same RAPL package: each is charged its
    process tree's CPU time over the machine's cores, not the whole package."""
    from hpsearch_budget.meters import _composite, default_meter
    from hpsearch_budget.optuna import _metering

    root = _fake_rapl(tmp_path / "powercap")
    machine = default_meter(devices=[], powercap_root=root)
    monkeypatch.setattr(_composite, "_shared", machine)
    monkeypatch.setattr(_metering, "_process", None)
    monkeypatch.setattr(_metering, "_shared", {})

    def objective(trial: optuna.Trial) -> float:
        # The machine's package spends 1000 J (other processes) while this trial waits.
        (root / "intel-rapl:0" / "energy_uj").write_text(f"{1000 * 10**6}\n")
        time.sleep(0.2)
        return trial.suggest_float("x", 0, 1)

    ledger = Ledger(sqlite_url)
    optuna.create_study(study_name="rapl").optimize(metered(objective, ledger), n_trials=1)
    row = ledger.entries(study="rapl").iloc[0]
    package_j = row["energy_by_domain"]["cpu:package-0"]
    cores = os.cpu_count() or 1
    # A waiting trial is charged for its process's CPU time alone (its threads, the test
    # suite's lingering ones too): well under one core's part of the package, not all of it.
    assert 0.0 <= package_j < 1000.0 / cores
    assert row["sources"]["cpu:package-0"] == "measured"
    machine.close()


def test_ask_and_tell_trials_are_metered_and_pruned_like_optimize(tmp_path, cpu_meter):
    """A metered objective is a plain callable: call it on asked trials, tell what it gave."""
    from hpsearch_budget import Budget
    from hpsearch_budget.optuna import BudgetPruner

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    budget = Budget(energy_kwh=1.0)
    wrapped = optuna.pruners.ThresholdPruner(upper=0.5)
    study = optuna.create_study(
        study_name="ask-tell",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        pruner=BudgetPruner(budget, ledger, wrapped=wrapped),
    )

    def train(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1, 1)
        for step in range(3):
            trial.report(x * x, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x * x

    run = metered(train, ledger, cpu_meter, budget=budget)
    for x in (0.9, 0.1):
        study.enqueue_trial({"x": x})
        trial = study.ask()
        try:
            study.tell(trial, run(trial))
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
    rows = ledger.entries(study="ask-tell").set_index("trial_number")
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.COMPLETE]
    assert list(rows["status"]) == ["pruned", "complete"]
    for t in study.trials:  # written in the commit of Optuna's tell
        assert t.user_attrs["energy_source"] == "estimated"
        assert t.user_attrs["energy_kwh"] == pytest.approx(j_to_kwh(rows.loc[t.number, "energy_j"]))

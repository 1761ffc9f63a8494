"""metered(): every trial is a ledger window; every result carries its cost."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from ray import tune

from hpsearch_budget.errors import HpauditInputError, LedgerError
from hpsearch_budget.ledger import Ledger, Scope
from hpsearch_budget.meters import Reading, ReplayMeter
from hpsearch_budget.ray import RESULT_KEYS, LedgerCallback, metered

pytestmark = pytest.mark.ray


def _result_lines(experiment: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted(experiment.glob("*/result.json")):
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        out[lines[0]["trial_id"]] = lines
    return out


def test_results_carry_energy_and_match_the_ledger(ray_local, trace, sqlite_url, make_run_config):
    ledger = Ledger(sqlite_url)

    def train(config):
        for step in range(3):
            trace.burn(config["watts"])
            tune.report({"loss": config["watts"] / (step + 1)})

    tuner = tune.Tuner(
        metered(train, ledger, meter=trace.meter, metric="loss"),
        param_space={"watts": tune.grid_search([10.0, 20.0])},
        run_config=make_run_config("exp", callbacks=[LedgerCallback(ledger)]),
    )
    grid = tuner.fit()
    assert not grid.errors

    rows = ledger.entries("exp")
    assert sorted(rows["status"]) == ["complete", "complete"]
    assert sorted(rows["energy_j"]) == [30.0, 60.0]  # exactly what the trials burnt
    assert set(rows["source"]) == {"replayed"}
    assert set(rows["project"]) == {"exp"}  # default project: the study, as policy caps expect
    assert rows["user"].notna().all()
    assert ledger.spent(Scope(study="exp")).energy_j == pytest.approx(trace.total())
    assert ledger.verify("exp").ok
    # the objective value is the last reported "loss"
    assert sorted(rows["value"]) == pytest.approx([10.0 / 3, 20.0 / 3])

    lines = _result_lines(Path(grid.experiment_path))
    assert len(lines) == 2
    for trial_lines in lines.values():
        assert all(set(RESULT_KEYS) <= set(line) for line in trial_lines)
        energies = [line["energy_j"] for line in trial_lines]
        assert energies == sorted(energies) and energies[0] > 0  # cumulative per window
        last = trial_lines[-1]
        row = rows[rows["id"] == last["hpaudit_window"]].iloc[0]
        assert row["energy_j"] == pytest.approx(last["energy_j"])
        assert row["co2e_g"] == pytest.approx(last["co2e_g"])
        assert last["energy_source"] == "replayed" and last["hpaudit_study"] == "exp"
        assert row["trial_key"] == f"exp:{last['trial_id']}"
        assert row["params"]["watts"] in (10.0, 20.0)

    # the folder Tune wrote is a report source, joined to the ledger on trial id
    from hpsearch_budget.report import build_report, load_sweep

    sweep = load_sweep(grid.experiment_path, ledger=sqlite_url, direction="minimize")
    assert sweep.source_kind == "ray" and sweep.study == "exp" and len(sweep.trials) == 2
    assert sorted(sweep.trials["energy_j"]) == [30.0, 60.0]
    assert sorted(sweep.trials["value"]) == pytest.approx([10.0 / 3, 20.0 / 3])
    assert sorted(p["watts"] for p in sweep.trials["params"]) == [10.0, 20.0]
    report = build_report(sweep)
    assert report.study.best_params == {"watts": 10.0}  # lower loss: the 10 W trial


def test_a_metric_never_reported_is_warned_once_naming_the_reported_keys(
    ray_local, trace, sqlite_url, make_run_config, caplog
):
    ledger = Ledger(sqlite_url)

    def train(config):
        for step in range(2):
            trace.burn(1.0)
            tune.report({"accuracy": config["x"] * (step + 1), "epoch": step})

    def fit(name, metric):
        tuner = tune.Tuner(
            metered(train, ledger, meter=trace.meter, metric=metric),
            param_space={"x": tune.grid_search([1.0, 2.0])},
            run_config=make_run_config(name, callbacks=[LedgerCallback(ledger)]),
        )
        assert not tuner.fit().errors
        return [r for r in caplog.records if "reported no number" in r.getMessage()]

    caplog.set_level("WARNING", logger="hpsearch_budget.ray")
    warned = fit("typo", "acc")  # a typo: the trainable reports "accuracy"
    assert len(warned) == 1  # once per experiment, not per trial or per result
    message = warned[0].getMessage()
    assert "metric='acc'" in message and "'accuracy', 'epoch'" in message
    assert "\n" not in message
    assert ledger.entries("typo")["value"].isna().all()  # what the warning is about
    caplog.clear()
    assert fit("right", "accuracy") == []  # the metric reported: no warning, values stored
    assert sorted(ledger.entries("right")["value"]) == [2.0, 4.0]


def test_errored_trial_is_recorded_and_charged(ray_local, trace, sqlite_url, make_run_config):
    ledger = Ledger(sqlite_url)

    def train(config):
        for step in range(4):
            trace.burn(5.0)
            if config["fail"] and step == 2:
                raise RuntimeError("diverged")
            tune.report({"loss": 1.0})

    grid = tune.Tuner(
        metered(train, ledger, meter=trace.meter),
        param_space={"fail": tune.grid_search([False, True])},
        run_config=make_run_config("err", callbacks=[LedgerCallback(ledger)]),
    ).fit()
    assert len(grid.errors) == 1 and "diverged" in str(grid.errors[0])

    rows = ledger.entries("err").set_index("status")
    assert rows.loc["complete", "energy_j"] == 20.0
    assert rows.loc["failed", "energy_j"] == 15.0  # the failing step's energy is charged too
    assert ledger.spent(Scope(study="err")).energy_j == pytest.approx(trace.total()) == 35.0


def test_retried_trial_charges_every_attempt_once_and_reports_as_one_trial(
    ray_local, trace, sqlite_url, tmp_path, make_run_config
):
    ledger = Ledger(sqlite_url)
    attempts = tmp_path / "attempts"

    def train(config):
        n = int(attempts.read_text()) if attempts.exists() else 0
        attempts.write_text(str(n + 1))
        for step in range(3):
            trace.burn(5.0)
            if n < 2 and step == 1:
                raise RuntimeError(f"attempt {n} diverged")
            tune.report({"loss": 1.0 + n})

    grid = tune.Tuner(
        metered(train, ledger, meter=trace.meter, metric="loss"),
        run_config=make_run_config(
            "retry",
            callbacks=[LedgerCallback(ledger)],
            failure_config=tune.FailureConfig(max_failures=2),
        ),
    ).fit()
    assert not grid.errors
    rows = ledger.entries("retry")
    assert rows["status"].tolist() == ["failed", "failed", "complete"]  # a window per attempt
    assert rows["trial_key"].nunique() == 1
    assert rows["energy_j"].tolist() == [10.0, 10.0, 15.0]
    assert ledger.spent(Scope(study="retry")).energy_j == pytest.approx(trace.total()) == 35.0

    # The report says the same from the Ray folder and from the ledger alone: one trial, that
    # completed, costing all its attempts (not its first failed attempt's 10 J).
    from hpsearch_budget.report import build_report, load_sweep

    for source, ledger_url in ((grid.experiment_path, sqlite_url), (sqlite_url, None)):
        sweep = load_sweep(source, ledger=ledger_url, direction="minimize")
        assert len(sweep.trials) == 1, source
        trial = sweep.trials.iloc[0]
        assert trial["state"] == "complete" and trial["value"] == 3.0
        assert trial["energy_j"] == 35.0
        assert build_report(sweep).rnd.phases[1].energy_kwh == pytest.approx(35.0 / 3.6e6)


def test_generator_and_returning_trainables_are_metered(
    ray_local, trace, sqlite_url, make_run_config
):
    ledger = Ledger(sqlite_url)

    def gen(config):
        for step in range(2):
            trace.burn(1.0)
            yield {"score": step}

    def returns(config):
        trace.burn(4.0)
        return {"score": 3}

    for name, fn in (("gen", gen), ("ret", returns)):
        grid = tune.Tuner(
            metered(fn, ledger, meter=trace.meter), run_config=make_run_config(name)
        ).fit()
        assert grid[0].metrics["energy_source"] == "replayed"
    assert ledger.entries("gen")["energy_j"].tolist() == [2.0]
    assert ledger.entries("ret")["energy_j"].tolist() == [4.0]
    assert grid[0].metrics["energy_j"] == 4.0 and grid[0].metrics["score"] == 3


@pytest.mark.parametrize("outside", [True, False])
def test_with_parameters_and_with_resources_in_either_order(
    outside, ray_local, trace, sqlite_url, make_run_config
):
    """The docstring's promise: tune.with_parameters / tune.with_resources outside or inside."""
    ledger = Ledger(sqlite_url)

    def train(config, joules=0.0):
        trace.burn(joules)
        tune.report({"loss": joules})

    if outside:
        trainable = tune.with_resources(
            tune.with_parameters(metered(train, ledger, meter=trace.meter), joules=2.0),
            {"cpu": 1},
        )
    else:
        trainable = metered(
            tune.with_resources(tune.with_parameters(train, joules=2.0), {"cpu": 1}),
            ledger,
            meter=trace.meter,
        )
    grid = tune.Tuner(trainable, run_config=make_run_config("wp")).fit()
    assert not grid.errors
    assert grid[0].metrics["loss"] == 2.0 and grid[0].metrics["energy_j"] == 2.0
    assert ledger.entries("wp")["energy_j"].tolist() == [2.0]


class NotAFunction(tune.Trainable):
    def step(self):
        return {"x": 1}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (NotAFunction, "got the class NotAFunction"),
        ("train_fn", "pass the function itself"),
        (lambda config, data: None, "exactly one argument"),
    ],
)
def test_not_a_function_trainable_is_refused(bad, words, sqlite_url):
    with pytest.raises(HpauditInputError, match=words):
        metered(bad, sqlite_url)


def test_ledger_unreachable_at_wrap_time_fails_before_any_trial():
    with pytest.raises(LedgerError):
        metered(lambda config: None, "postgresql+psycopg://nobody@127.0.0.1:9/none")


def test_ledger_unreachable_from_the_worker_fails_the_trial(
    ray_local, tmp_path, trace, make_run_config
):
    shared = tmp_path / "mnt"
    shared.mkdir()
    url = f"sqlite:///{shared / 'ledger.db'}"
    ran = tmp_path / "ran"

    def train(config):
        ran.write_text("ran unmetered")
        tune.report({"x": 1})

    trainable = metered(train, url, meter=trace.meter)  # reachable here, on the driver
    (shared / "ledger.db").unlink()
    shared.rmdir()  # ...but not where the trial runs (a path not mounted on that node)
    grid = tune.Tuner(trainable, run_config=make_run_config("gone")).fit()
    assert len(grid.errors) == 1
    assert "ledger unreachable from the Ray worker" in str(grid.errors[0])
    assert not ran.exists()  # the trial never ran unmetered


def test_a_fractional_gpu_trial_is_charged_its_share_of_the_gpu(monkeypatch):
    """Two trials on one GPU ({"gpu": 0.5}) each read the whole GPU's counter: each is charged
    half of it (CI has no GPU: the machine is a replay meter, the wiring is the real one)."""
    from hpsearch_budget import meters
    from hpsearch_budget.ray._metered import _Spec, _TrialRun

    machine = ReplayMeter(power_w={"gpu:0": 300.0, "cpu": 5.0})
    monkeypatch.setattr(meters, "default_meter", lambda devices: machine)
    spec = _Spec("sqlite://", None, None, None, None, None, None, "u", 30.0)
    half = _TrialRun(spec)._make_meter(["0"], 0.5)
    start = half.read()
    machine.advance(10.0)
    used = half.read() - start
    assert used.by_domain == pytest.approx({"gpu:0": 1500.0, "cpu": 50.0})
    assert _TrialRun(spec)._make_meter(["0"], 1.0) is machine  # a whole GPU: its own counter


def test_trial_number_is_the_index_of_a_variant_generator_id_only():
    from hpsearch_budget.ray._metered import _trial_number

    assert _trial_number("4e8a1_00003") == 3
    assert _trial_number("8cee68a7") is None  # a search algorithm's id (OptunaSearch): no index
    # ...whose 8 hex digits are all decimal for about 1 trial in 43: not an index either
    assert _trial_number("12345678") is None


def test_callback_dates_its_run_on_the_ledger_clock_not_the_driver_clock(sqlite_url):
    """A driver whose clock runs ahead of the database server (PostgreSQL: the ledger's clock)
    must not take the run's own fresh windows for a crashed run's and kill them."""
    from types import SimpleNamespace

    ledger = Ledger(sqlite_url)
    ledger._offset_s = -100.0  # as a PostgreSQL ledger measures it: the server 100 s behind
    callback = LedgerCallback(ledger, study="skew")
    callback.setup()
    window = ledger.open_window("skew", "skew:t1", checkpoint_interval_s=30.0)  # a worker's
    trial = SimpleNamespace(trial_id="t1", experiment_dir_name="skew")
    callback.on_trial_start(0, [trial], trial)
    row = ledger.entries(study="skew").set_index("id").loc[window]
    assert row["status"] == "running"


class _CounterBrokenOnce(ReplayMeter):
    """A GPU counter that reads NaN once (a broken NVML read), behind the real Meter interface."""

    def __init__(self) -> None:
        super().__init__(power_w=10.0)
        self.reads = 0

    def read(self) -> Reading:
        reading = super().read()
        self.reads += 1
        if self.reads != 2:  # the first heartbeat's read
            return reading
        return replace(reading, energy_j={d: float("nan") for d in reading.energy_j})


def test_a_meter_failure_in_the_heartbeat_fails_the_trial_at_its_next_report(sqlite_url):
    """The heartbeat thread must not die with the error on its own: the trial's next report
    raises it (naming the broken domain), as a failure of the report's own read would."""
    import threading
    import time

    from hpsearch_budget.errors import MeterError
    from hpsearch_budget.ray._metered import _Spec, _TrialRun

    spec = _Spec(sqlite_url, None, "s", None, None, None, None, "ana", 0.05)
    run = _TrialRun(spec)
    run.ledger, run.meter = Ledger(sqlite_url), _CounterBrokenOnce()
    run.state.start = run.meter.read()
    run.state.window = run.ledger.open_window("s", "s:t1", checkpoint_interval_s=0.05)
    unhandled: list[BaseException | None] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: unhandled.append(args.exc_value)
    try:
        beat = threading.Thread(target=run._heartbeat)
        beat.start()
        time.sleep(0.3)
        run.stop.set()
        beat.join()
    finally:
        threading.excepthook = hook
    assert unhandled == []
    with pytest.raises(MeterError, match="then nan J: its counter is broken"):
        run._annotate({"loss": 1.0})

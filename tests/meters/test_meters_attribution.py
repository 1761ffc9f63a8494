"""Splitting machine energy between concurrent trials: shares, idle and exact conservation."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest

from hpsearch_budget.attribution import Attributor, Usage, attribute
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.meters import Measurement, ReplayMeter, Source

DOMAINS = {"gpu:0": 280.0, "gpu:1": 310.0, "cpu:package-0": 95.0, "dram:package-0": 12.0}


def _exactly_conserved(split: object, measured: Measurement) -> bool:
    by_trial = split.by_trial.values()  # type: ignore[attr-defined]
    idle = split.idle  # type: ignore[attr-defined]
    return all(
        math.fsum([*(t.by_domain[d] for t in by_trial), idle.by_domain[d]]) == e
        for d, e in measured.by_domain.items()
    )


def test_three_concurrent_trials_conserve_energy_to_the_joule() -> None:
    meter = ReplayMeter(power_w=DOMAINS)
    begin = meter.read()
    meter.advance(123.456)
    measured = meter.read() - begin
    usage = {
        "t0": Usage(cpu_s=100.0, gpus={"gpu:0": 1.0}),
        "t1": Usage(cpu_s=61.7, gpus={"gpu:1": 0.5}),
        "t2": Usage(cpu_s=0.3, gpus={"gpu:1": 0.25}),
    }
    split = attribute(measured, usage, cpu_capacity_s=8 * 123.456)
    assert split.conserved() and _exactly_conserved(split, measured)
    total = split.attributed_j + split.idle.energy_j
    assert total == pytest.approx(measured.energy_j, abs=1e-6)
    # GPU: the holder pays all of gpu:0; gpu:1 by share, the unheld quarter is idle
    assert split.by_trial["t0"].by_domain["gpu:0"] == measured.by_domain["gpu:0"]
    assert split.by_trial["t2"].by_domain["gpu:0"] == 0.0
    gpu1 = measured.by_domain["gpu:1"]
    assert split.by_trial["t1"].by_domain["gpu:1"] == pytest.approx(0.5 * gpu1)
    assert split.idle.by_domain["gpu:1"] == pytest.approx(0.25 * gpu1)
    # CPU package: CPU-time share of capacity (8 cores x wall)
    pkg = measured.by_domain["cpu:package-0"]
    assert split.by_trial["t1"].by_domain["cpu:package-0"] == pytest.approx(
        pkg * 61.7 / (8 * 123.456)
    )
    assert split.idle.by_domain["cpu:package-0"] == pytest.approx(pkg * (1 - 162 / 987.648))
    assert split.by_trial["t0"].sources["gpu:0"] == Source.REPLAYED


def test_conservation_is_exact_for_awkward_numbers() -> None:
    rng = random.Random(7)
    for _ in range(300):
        measured = Measurement(
            rng.uniform(0.001, 1e4),
            {d: rng.uniform(0, 1e7) * rng.choice([1e-9, 1.0, 1e3]) for d in DOMAINS},
            dict.fromkeys(DOMAINS, Source.MEASURED),
        )
        usage = {
            f"t{i}": Usage(
                cpu_s=rng.uniform(0, measured.wall_s * 4),
                gpus={d: rng.choice([0.0, 1 / 3, 0.5, 1.0]) for d in ("gpu:0", "gpu:1")},
            )
            for i in range(3)
        }
        split = attribute(
            measured,
            usage,
            cpu_capacity_s=2 * measured.wall_s,
            cpu_split=rng.choice(["capacity", "used"]),
        )
        assert _exactly_conserved(split, measured)
        assert all(j >= 0 for t in split.by_trial.values() for j in t.by_domain.values())
        assert all(j >= 0 for j in split.idle.by_domain.values())


def test_oversubscribed_gpu_is_split_by_relative_share() -> None:
    measured = Measurement(10.0, {"gpu:0": 900.0}, {"gpu:0": Source.MEASURED})
    split = attribute(measured, {"a": Usage(gpus={"gpu:0": 1.0}), "b": Usage(gpus={"gpu:0": 0.5})})
    assert split.energy_j("a") == pytest.approx(600.0)
    assert split.energy_j("b") == pytest.approx(300.0)
    assert split.idle.energy_j == pytest.approx(0.0, abs=1e-9)


def test_used_split_and_estimated_domains_leave_no_cpu_idle() -> None:
    measured = Measurement(
        10.0,
        {"cpu:package-0": 1000.0, "cpu": 400.0},
        {"cpu:package-0": Source.MEASURED, "cpu": Source.ESTIMATED},
    )
    usage = {"a": Usage(cpu_s=3.0), "b": Usage(cpu_s=1.0)}
    capacity = attribute(measured, usage, cpu_capacity_s=40.0)
    # a measured package: the 36 unused core-seconds are idle; the estimate: all used
    assert capacity.by_trial["a"].by_domain["cpu:package-0"] == pytest.approx(75.0)
    assert capacity.by_trial["a"].by_domain["cpu"] == pytest.approx(300.0)
    used = attribute(measured, usage, cpu_split="used")
    assert used.by_trial["a"].by_domain["cpu:package-0"] == pytest.approx(750.0)
    assert used.idle.energy_j == pytest.approx(0.0, abs=1e-9)
    nobody = attribute(measured, {"a": Usage()}, cpu_split="used")
    assert nobody.idle.energy_j == 1400.0 and nobody.energy_j("a") == 0.0


def test_bad_usage_is_rejected() -> None:
    with pytest.raises(HpauditInputError, match="cpu_s"):
        Usage(cpu_s=-1.0)
    with pytest.raises(HpauditInputError, match="gpu:<index>"):
        Usage(gpus={"cuda:0": 1.0})
    with pytest.raises(HpauditInputError, match="share in"):
        Usage(gpus={"gpu:0": 1.5})
    with pytest.raises(HpauditInputError, match="cpu_split"):
        attribute(Measurement(1.0), {}, cpu_split="fair")  # type: ignore[arg-type]


def test_attributor_trials_starting_and_stopping_at_different_times() -> None:
    meter = ReplayMeter(power_w={"gpu:0": 300.0, "cpu:package-0": 100.0})
    cpu = {"a": 0.0, "b": 0.0, "c": 0.0}
    att = Attributor(meter, cores=4)
    begin = meter.read()
    att.start("a", cpu_s=lambda: cpu["a"], gpus={"gpu:0": 1.0})
    meter.advance(10.0)
    cpu["a"] += 40.0  # 4 cores busy for 10 s
    att.start("b", cpu_s=lambda: cpu["b"])
    att.start("c", cpu_s=lambda: cpu["c"])
    meter.advance(10.0)
    cpu["a"] += 20.0
    cpu["b"] += 10.0
    cpu["c"] += 10.0
    a = att.stop("a")
    meter.advance(10.0)  # only b and c, using nothing: all idle
    b, c = att.stop("b"), att.stop("c")
    measured = meter.read() - begin
    assert a.by_domain["gpu:0"] == pytest.approx(6000.0)
    assert a.by_domain["cpu:package-0"] == pytest.approx(1000.0 + 500.0)
    assert b.energy_j == pytest.approx(250.0) and c.energy_j == pytest.approx(250.0)
    parts = a.energy_j + b.energy_j + c.energy_j + att.idle.energy_j
    assert parts == pytest.approx(measured.energy_j, abs=1e-6)
    assert att.idle.by_domain["gpu:0"] == pytest.approx(3000.0)


def test_attributor_charges_threads_by_their_own_cpu_time() -> None:
    stop = threading.Event()
    started = threading.Barrier(3)

    def busy() -> None:
        started.wait()
        while not stop.is_set():
            pass

    def idle() -> None:
        started.wait()
        stop.wait()

    threads = [threading.Thread(target=f) for f in (busy, idle)]
    for t in threads:
        t.start()
    meter = ReplayMeter(power_w={"cpu:package-0": 100.0}, realtime=True)
    att = Attributor(meter, cpu_split="used")
    try:
        att.start("busy", thread=threads[0].ident)
        att.start("idle", thread=threads[1].ident)
        started.wait()
        time.sleep(0.3)
        busy_m, idle_m = att.stop("busy"), att.stop("idle")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert busy_m.energy_j > 5 * idle_m.energy_j
    with pytest.raises(HpauditInputError, match="exactly one of"):
        att.start("x", pid=1, thread=threads[0].ident)


# -- ProcessShareMeter: one worker's part of the machine's counters ------------------------------


def test_two_workers_on_one_machine_are_each_charged_their_part_not_all_of_it() -> None:
    from hpsearch_budget.attribution import ProcessShareMeter

    machine = ReplayMeter(power_w={"cpu:package-0": 100.0, "gpu:0": 300.0, "ram": 2.0})
    cpu = {"a": 0.0, "b": 0.0}
    workers = {
        k: ProcessShareMeter(machine, cpu_s=lambda k=k: cpu[k], gpu_share=0.5, cores=8) for k in cpu
    }
    start = {k: w.read() for k, w in workers.items()}
    machine.advance(10.0)
    cpu["a"], cpu["b"] = 30.0, 10.0  # 3 and 1 of 8 cores busy for 10 s
    got = {k: (w.read() - start[k]).by_domain for k, w in workers.items()}
    assert got["a"]["cpu:package-0"] == pytest.approx(1000.0 * 3 / 8)
    assert got["b"]["cpu:package-0"] == pytest.approx(1000.0 * 1 / 8)
    assert got["a"]["gpu:0"] == got["b"]["gpu:0"] == pytest.approx(1500.0)  # half a GPU each
    assert got["a"]["ram"] == got["b"]["ram"] == pytest.approx(20.0)  # the process's own: whole
    # Together they never exceed what the machine measured (the rest is idle).
    assert got["a"]["cpu:package-0"] + got["b"]["cpu:package-0"] <= 1000.0
    assert got["a"]["gpu:0"] + got["b"]["gpu:0"] == pytest.approx(3000.0)


def test_share_meter_readings_stay_cumulative_over_many_reads() -> None:
    from hpsearch_budget.attribution import ProcessShareMeter

    machine = ReplayMeter(power_w={"cpu:package-0": 50.0})
    used = [0.0]
    meter = ProcessShareMeter(machine, cpu_s=lambda: used[0], cores=2)
    first = meter.read()
    for busy in (2.0, 0.0, 1.0, 2.0):  # cores busy in each 1 s interval
        machine.advance(1.0)
        used[0] += busy
        meter.read()
    assert (meter.read() - first).by_domain["cpu:package-0"] == pytest.approx(50.0 * 5.0 / 2.0)
    assert meter.read().sources == {"cpu:package-0": Source.REPLAYED}


def test_share_meter_charges_this_process_cpu_time_by_default() -> None:
    from hpsearch_budget.attribution import ProcessShareMeter
    from hpsearch_budget.meters import ProcessTree

    machine = ReplayMeter(power_w={"cpu:package-0": 100.0})
    tree = ProcessTree()
    meter = ProcessShareMeter(machine, cores=1)
    before, start = tree.sample()[0], meter.read()
    end = time.process_time() + 0.05
    while time.process_time() < end:  # burn CPU in this process
        pass
    after = tree.sample()[0]
    machine.advance(10.0)
    charged = (meter.read() - start).by_domain["cpu:package-0"]
    # 1000 J over 1 core x 10 s: 100 J per CPU second this process burnt (os.times() ticks
    # are 10 ms, and the meter samples a moment after the test does).
    assert after - before >= 0.03
    assert charged == pytest.approx(100.0 * (after - before), abs=100.0 * 0.02)


def test_share_meter_is_needed_only_for_counters_the_worker_shares() -> None:
    from hpsearch_budget.attribution import ProcessShareMeter

    own_gpu = ReplayMeter(power_w={"gpu:0": 1.0, "cpu": 1.0, "ram": 1.0})
    package = ReplayMeter(power_w={"cpu:package-0": 1.0, "ram": 1.0})
    assert not ProcessShareMeter.needed(own_gpu)  # a whole GPU and process-scoped estimates
    assert ProcessShareMeter.needed(own_gpu, gpu_share=0.25)
    assert ProcessShareMeter.needed(package)
    shared = ProcessShareMeter(package, cpu_s=lambda: 0.0, cores=4)
    assert any("over the machine's 4 cores" in n for n in shared.notes)
    with pytest.raises(HpauditInputError, match="gpu_share"):
        ProcessShareMeter(own_gpu, cpu_s=lambda: 0.0, gpu_share=0.0)


def test_attributor_writes_its_idle_to_the_ledger_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hpsearch_budget.ledger import Ledger, Scope

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    meter = ReplayMeter(power_w={"gpu:0": 200.0, "gpu:1": 100.0})
    att = Attributor(meter)
    att.start("a", cpu_s=lambda: 0.0, gpus={"gpu:0": 1.0})
    meter.advance(10.0)  # gpu:1 is held by no trial: 1000 J idle
    a = att.stop("a")
    window = ledger.open_window("s", "s:a")
    ledger.finalize(window, a, status="complete")
    first = att.record_idle(ledger, "s")
    assert att.record_idle(ledger, "s") is None  # nothing new: no second row
    meter.advance(5.0)  # no trial at all: 1500 J idle
    att.record_idle(ledger, "s")
    rows = ledger.entries(study="s")
    idle = rows[rows["phase"] == "idle"]
    assert first is not None and next(iter(idle["id"])) == first
    assert list(idle["energy_j"]) == [1000.0, 1500.0] and idle["trial_number"].isna().all()
    assert att.idle.energy_j == 2500.0  # still the total since the first call
    # The study's rows now hold all the meter measured: conservation in the ledger.
    assert ledger.spent(Scope(study="s")).energy_j == sum(meter.read().energy_j.values())

"""NvmlMeter against a fake pynvml with the real module's API and units."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from hpsearch_budget.errors import MeterError
from hpsearch_budget.meters import NvmlMeter, Source
from hpsearch_budget.meters.nvml import visible_device_tokens

pytestmark = pytest.mark.usefixtures("no_cuda_env")


def test_counter_window_is_measured_in_joules(fake_nvml: Any) -> None:
    meter = NvmlMeter(nvml=fake_nvml)
    assert meter.domains() == ["gpu:0", "gpu:1", "gpu:2"]
    assert meter.modes == dict.fromkeys(meter.domains(), "counter")
    begin = meter.read()
    fake_nvml.gpus[0].energy_mj += 250_500  # 250.5 J
    fake_nvml.gpus[2].energy_mj += 1_000
    m = meter.read() - begin
    assert m.by_domain == {"gpu:0": 250.5, "gpu:1": 0.0, "gpu:2": 1.0}
    assert set(m.sources.values()) == {Source.MEASURED}
    meter.close()
    assert fake_nvml.inits == 0  # nvmlShutdown balanced nvmlInit


def test_no_sampler_thread_for_counter_gpus(fake_nvml: Any) -> None:
    with NvmlMeter(nvml=fake_nvml) as meter:
        calls = fake_nvml.calls
        time.sleep(0.05)
        assert fake_nvml.calls == calls  # nothing reads behind our back
        assert meter._thread is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("2,0", ["gpu:2", "gpu:0"]),
        ("GPU-8a9b0c1d-6666-7777-8888-999900001111", ["gpu:1"]),
        ("GPU-1f2e", ["gpu:0"]),  # a unique UUID prefix, as CUDA accepts
        ("1,-1,0", ["gpu:1"]),  # CUDA ignores everything after -1
        ("", []),
    ],
)
def test_cuda_visible_devices_map_to_nvml_indices(
    fake_nvml: Any, monkeypatch: pytest.MonkeyPatch, env: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    with NvmlMeter(nvml=fake_nvml) as meter:
        assert meter.domains() == expected


def test_visible_device_tokens_stop_at_an_invalid_entry() -> None:
    assert visible_device_tokens("0,foo,1") == ["0"]
    assert visible_device_tokens(None) is None


def test_ambiguous_or_unknown_devices_say_how_to_fix(fake_nvml: Any) -> None:
    with pytest.raises(MeterError, match=r"2 GPUs share the UUID 'GPU-8a'.*nvidia-smi -L"):
        NvmlMeter(["GPU-8a"], nvml=fake_nvml)
    with pytest.raises(MeterError, match=r"index 7 does not exist.*indices 0-2"):
        NvmlMeter([7], nvml=fake_nvml)
    assert fake_nvml.inits == 0  # a failed constructor releases NVML


def test_missing_driver_is_a_clear_error(fakes: SimpleNamespace) -> None:
    with pytest.raises(MeterError, match=r"NVIDIA driver.*prefer='estimate'"):
        NvmlMeter(nvml=fakes.FakeNvml([], driver=False))


def test_mig_instance_error_names_the_parent_and_the_fix(fakes: SimpleNamespace) -> None:
    nvml = fakes.FakeNvml(
        [fakes.FakeGpu(fakes.UUIDS[0], mig=1)], migs=[fakes.FakeMig("MIG-aaaa-bbbb", parent=0)]
    )
    with pytest.raises(MeterError, match=r"MIG instance of GPU 0.*mig='parent'.*Attributor"):
        NvmlMeter(["MIG-aaaa-bbbb"], nvml=nvml)
    with NvmlMeter(["MIG-aaaa-bbbb"], nvml=nvml, mig="parent") as meter:
        assert meter.domains() == ["gpu:0"]
        assert any("MIG mode" in n for n in meter.notes)
        assert any("whole GPU for MIG instance" in n for n in meter.notes)


def test_the_mig_advice_splits_energy_where_the_ledger_gpu_share_does_not(
    fakes: SimpleNamespace, tmp_path: Any
) -> None:
    """The error used to say 'split it by share (e.g. gpu_share=1/7)': the ledger's gpu_share
    scales GPU-hours only, so a 1g slice was still charged the whole GPU's energy."""
    from hpsearch_budget.attribution import Attributor
    from hpsearch_budget.ledger import Ledger

    nvml = fakes.FakeNvml(
        [fakes.FakeGpu(fakes.UUIDS[0], mig=1)], migs=[fakes.FakeMig("MIG-aaaa-bbbb", parent=0)]
    )
    with pytest.raises(MeterError) as error:
        NvmlMeter(["MIG-aaaa-bbbb"], nvml=nvml)
    advice = str(error.value)
    assert "gpus={'gpu:0': 1/7}" in advice and "gpu_share only scales GPU-hours" in advice
    with NvmlMeter(["MIG-aaaa-bbbb"], nvml=nvml, mig="parent") as meter:
        begin = meter.read()
        attributor = Attributor(meter)
        attributor.start("slice", cpu_s=lambda: 0.0, gpus={"gpu:0": 1 / 7})
        nvml.gpus[0].energy_mj += 7_000_000  # the whole GPU: 7 kJ
        assert attributor.stop("slice").energy_j == pytest.approx(1000.0)
        whole = meter.read() - begin
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    window = ledger.open_window("s", "s:0", devices=["gpu:0"], gpu_share=1 / 7)
    assert ledger.finalize(window, whole, status="complete").energy_j == pytest.approx(7000.0)
    ledger.close()


def test_non_strict_meter_leaves_bad_devices_out_with_a_note(fakes: SimpleNamespace) -> None:
    nvml = fakes.FakeNvml(
        [
            fakes.FakeGpu(fakes.UUIDS[0]),
            fakes.FakeGpu(fakes.UUIDS[1], energy_mj=None, power_mw=None),
        ]
    )
    with pytest.raises(MeterError, match="neither energy nor power"):
        NvmlMeter(nvml=nvml)
    with NvmlMeter(nvml=nvml, strict=False) as meter:
        assert meter.domains() == ["gpu:0"]
        assert any("gpu:1" in n and "cannot be metered" in n for n in meter.notes)


def test_pre_volta_gpu_integrates_power(fakes: SimpleNamespace) -> None:
    nvml = fakes.FakeNvml([fakes.FakeGpu(fakes.UUIDS[0], energy_mj=None, power_mw=200_000)])
    with NvmlMeter(nvml=nvml, sample_hz=50) as meter:
        assert meter.modes == {"gpu:0": "power"}
        begin = meter.read()
        calls = nvml.calls
        time.sleep(0.3)
        switched = time.monotonic()
        nvml.gpus[0].power_mw = 400_000  # a step only a running sampler sees where it was
        time.sleep(0.06)
        end = meter.read()
        m = end - begin
        assert m.sources == {"gpu:0": Source.INTEGRATED}
        truth = 200.0 * (switched - begin.time_s) + 400.0 * (end.time_s - switched)
        # Two reads alone (no sampler) would integrate 300 W over the whole span: ~24 J off.
        # A 50 Hz sampler misses the step by at most a sample or two (200 W x 0.02 s each).
        assert m.by_domain["gpu:0"] == pytest.approx(truth, abs=10.0)
        assert nvml.calls - calls >= 5  # the sampler thread read in between
    assert meter._thread is None  # close() stopped it


def test_power_mode_can_be_forced_and_counter_mode_required(
    fake_nvml: Any, fakes: SimpleNamespace
) -> None:
    with NvmlMeter([0], nvml=fake_nvml, mode="power") as meter:
        assert meter.modes == {"gpu:0": "power"}
    nvml = fakes.FakeNvml([fakes.FakeGpu(fakes.UUIDS[0], energy_mj=None)])
    with pytest.raises(MeterError, match="Volta or newer"):
        NvmlMeter(nvml=nvml, mode="counter")


def test_counter_going_backwards_is_a_reset_not_negative_energy(fake_nvml: Any) -> None:
    with NvmlMeter([0], nvml=fake_nvml) as meter:
        fake_nvml.gpus[0].energy_mj = 5_000_000
        begin = meter.read()
        fake_nvml.gpus[0].energy_mj = 7_000_000  # +2000 J
        meter.read()
        fake_nvml.gpus[0].energy_mj = 300_000  # driver reloaded: restarted from 0, +300 J
        middle = meter.read()
        fake_nvml.gpus[0].energy_mj = 1_300_000  # +1000 J
        end = meter.read()
        assert (end - begin).by_domain["gpu:0"] == pytest.approx(3300.0)
        assert (end - middle).by_domain["gpu:0"] == pytest.approx(1000.0)
        assert any("went backwards" in n for n in meter.notes)


def test_device_lost_mid_window_keeps_energy_until_then(fake_nvml: Any) -> None:
    with NvmlMeter([0, 1], nvml=fake_nvml) as meter:
        begin = meter.read()
        fake_nvml.gpus[0].energy_mj += 100_000
        fake_nvml.gpus[1].energy_mj += 40_000
        meter.read()
        fake_nvml.gpus[1].lost = True  # fell off the bus
        fake_nvml.gpus[0].energy_mj += 100_000
        end = meter.read()
        m = end - begin
        assert m.by_domain == {"gpu:0": 200.0, "gpu:1": 40.0}
        assert any("gpu:1" in n and "stopped answering" in n for n in meter.notes)
        assert len(meter.notes) == 1  # reported once, not at every read
        meter.read()
        assert len(meter.notes) == 1

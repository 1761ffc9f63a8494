"""Fakes of the hardware CI lacks, behind the interfaces the real readers use.

* :class:`FakeNvml` has the ``pynvml`` functions :class:`NvmlMeter` calls, with the same
  units (mJ, mW), error class (``NVMLError`` with ``.value``) and constants.
* :func:`powercap_tree` writes a ``/sys/class/powercap`` look-alike: ``intel-rapl:<n>`` zones
  with ``name``, ``energy_uj`` and ``max_energy_range_uj``, flat as sysfs lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 6: "Not Found", 9: "Driver Not Loaded", 15: "GPU is lost"}[
            self.value
        ]


@dataclass
class FakeGpu:
    uuid: str
    energy_mj: int | None = 0  # None: no energy counter (pre-Volta)
    power_mw: int | None = 100_000  # None: no power reading either
    mig: int | None = 0  # None: MIG not supported
    lost: bool = False


@dataclass
class FakeMig:
    uuid: str
    parent: int


class FakeNvml:
    """The slice of pynvml that NvmlMeter uses."""

    NVMLError = NVMLError
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_DEVICE_MIG_ENABLE = 1

    def __init__(self, gpus: list[FakeGpu], migs: list[FakeMig] = (), driver: bool = True):  # type: ignore[assignment]
        self.gpus = gpus
        self.migs = list(migs)
        self.driver = driver
        self.inits = 0
        self.calls = 0

    def nvmlInit(self) -> None:
        if not self.driver:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> object:
        for mig in self.migs:
            if mig.uuid == uuid:
                return mig
        for i, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return i
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: object) -> int:
        if not isinstance(handle, FakeMig):
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return handle.parent

    def nvmlDeviceGetIndex(self, handle: int) -> int:
        return handle

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return self.gpus[handle].uuid.encode()  # real pynvml may return bytes

    def _gpu(self, handle: int) -> FakeGpu:
        gpu = self.gpus[handle]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def nvmlDeviceGetMigMode(self, handle: int) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return [gpu.mig, gpu.mig]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        self.calls += 1
        gpu = self._gpu(handle)
        if gpu.energy_mj is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.energy_mj

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        self.calls += 1
        gpu = self._gpu(handle)
        if gpu.power_mw is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.power_mw


UUIDS = [
    "GPU-1f2e3d4c-0000-1111-2222-333344445555",
    "GPU-8a9b0c1d-6666-7777-8888-999900001111",
    "GPU-8a77aaaa-6666-7777-8888-999900002222",
]


@pytest.fixture
def fake_nvml() -> FakeNvml:
    """Three Volta+ GPUs, no MIG."""
    return FakeNvml([FakeGpu(uuid) for uuid in UUIDS])


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The fake classes, for tests that build their own GPUs (conftest is not importable)."""
    return SimpleNamespace(FakeNvml=FakeNvml, FakeGpu=FakeGpu, FakeMig=FakeMig, UUIDS=UUIDS)


@pytest.fixture
def no_cuda_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


class PowercapTree:
    """A fake powercap folder; ``set(domain_dir, uj)`` moves a counter."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def zone(self, zone_id: str, name: str, energy_uj: int, range_uj: int, **extra: int) -> None:
        folder = self.root / zone_id
        folder.mkdir(parents=True)
        (folder / "name").write_text(name + "\n")
        (folder / "energy_uj").write_text(f"{energy_uj}\n")
        (folder / "max_energy_range_uj").write_text(f"{range_uj}\n")
        for key, value in extra.items():
            (folder / key).write_text(f"{value}\n")

    def set(self, zone_id: str, energy_uj: int) -> None:
        # Rewrite in place (same inode), as sysfs regenerates the value on each read.
        with open(self.root / zone_id / "energy_uj", "r+") as f:
            f.truncate(0)
            f.write(f"{energy_uj}\n")

    def get(self, zone_id: str) -> int:
        return int((self.root / zone_id / "energy_uj").read_text())


RANGE_UJ = 262_143_328_850  # a real Intel package's max_energy_range_uj


@pytest.fixture
def powercap(tmp_path: Path) -> PowercapTree:
    """Two sockets, each with package, core and dram zones, plus psys and an mmio duplicate."""
    tree = PowercapTree(tmp_path / "powercap")
    for n in (0, 1):
        tree.zone(f"intel-rapl:{n}", f"package-{n}", 1_000_000 * (n + 1), RANGE_UJ)
        tree.zone(f"intel-rapl:{n}:0", "core", 5, RANGE_UJ)
        tree.zone(f"intel-rapl:{n}:1", "dram", 100_000, 65_532_610_987)
    tree.zone("intel-rapl:2", "psys", 0, RANGE_UJ)
    tree.zone("intel-rapl-mmio:0", "package-0", 0, RANGE_UJ)
    return tree

"""GPU energy from NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

Volta and newer GPUs expose a total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ
since the driver loaded): a window costs two reads and the figure is ``measured``. Older GPUs
only report instantaneous power; for them a sampler thread integrates
``nvmlDeviceGetPowerUsage`` with the trapezoid rule and the figure is ``integrated``.

Domains are ``gpu:<index>`` with the NVML index, which is the index ``nvidia-smi`` shows and is
the same in every process, so two trials on different ``CUDA_VISIBLE_DEVICES`` never collide.

Example (the NVML module can be injected; tests pass a fake one)::

    >>> from hpsearch_budget.meters import NvmlMeter
    >>> meter = NvmlMeter()                      # doctest: +SKIP
    >>> begin = meter.read(); ...; end = meter.read()   # doctest: +SKIP
    >>> (end - begin).by_domain                  # doctest: +SKIP
    {'gpu:0': 1234.5}
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from hpsearch_budget.errors import MeterError
from hpsearch_budget.meters.base import Meter, Reading, Source

log = logging.getLogger("hpsearch_budget.meters")

#: Default power-sampling rate for GPUs without an energy counter. NVML refreshes power about
#: every 20-100 ms depending on the board, so faster sampling buys nothing.
SAMPLE_HZ = 10.0


@dataclass
class _Device:
    """One GPU and the state needed to turn its raw readings into a monotonic total."""

    index: int
    uuid: str
    handle: Any
    mode: Literal["counter", "power"]
    energy_j: float = 0.0  # monotonic total this meter reports
    last_raw_mj: int | None = None  # counter mode: last raw counter value
    last_t: float | None = None  # power mode: time and power of the last sample
    last_w: float = 0.0
    lost: bool = False

    @property
    def domain(self) -> str:
        return f"gpu:{self.index}"


def _load_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MeterError(
            "the NVML bindings are not installed: pip install nvidia-ml-py (module pynvml)"
        ) from exc
    return pynvml


def visible_device_tokens(env: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA parses it: None when unset (every GPU is visible).

    CUDA stops at the first entry it cannot parse and ignores the rest, and ``-1`` (or any
    negative index) hides every device from that point on: we do the same.

    >>> visible_device_tokens("1, GPU-8f2a,-1,0")
    ['1', 'GPU-8f2a']
    >>> visible_device_tokens("") , visible_device_tokens(None)
    ([], None)
    """
    if env is None:
        return None
    tokens: list[str] = []
    for raw in env.split(","):
        token = raw.strip()
        if not token:
            break
        if token.lstrip("-").isdigit():
            if int(token) < 0:
                break
        elif not token.startswith(("GPU-", "MIG-")):
            break
        tokens.append(token)
    return tokens


class NvmlMeter(Meter):
    """Cumulative joules per GPU from NVML: the energy counter, or integrated power.

    Args:
        devices: NVML indices or UUIDs (full or a unique prefix, as CUDA accepts). None: the
            GPUs in ``CUDA_VISIBLE_DEVICES``, or every GPU when it is unset. Integer entries of
            ``CUDA_VISIBLE_DEVICES`` are taken as NVML (PCI bus) indices; they are CUDA's
            indices too when ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or the GPUs are all alike (CUDA's
            default "fastest first" order then falls back to the bus order). UUIDs are
            unambiguous: prefer them on mixed machines.
        nvml: the NVML module (default: ``pynvml``); tests inject a fake with the same API.
        sample_hz: sampling rate of the power integrator (GPUs without an energy counter).
        mig: what to do with a MIG instance (``MIG-...``): ``"error"`` raises with the fix;
            ``"parent"`` meters the whole parent GPU (NVML has no per-instance energy), which
            the caller must then split, e.g. with :class:`hpsearch_budget.attribution.Attributor`
            and ``gpus={"gpu:<i>": share}`` (the ledger's ``gpu_share`` only scales GPU-hours).
        strict: when False, a GPU that cannot be metered is left out with a note instead of
            raising (what :func:`default_meter` does).
        mode: ``"auto"`` (counter when the GPU has one), ``"counter"`` or ``"power"`` (force the
            sampler, e.g. to compare both on one GPU).
    """

    source = Source.MEASURED
    wall_clock = True

    def __init__(
        self,
        devices: Sequence[int | str] | None = None,
        *,
        nvml: ModuleType | Any | None = None,
        sample_hz: float = SAMPLE_HZ,
        mig: Literal["error", "parent"] = "error",
        strict: bool = True,
        mode: Literal["auto", "counter", "power"] = "auto",
    ) -> None:
        if sample_hz <= 0:
            raise MeterError(f"sample_hz must be > 0, got {sample_hz}")
        self._nvml = nvml if nvml is not None else _load_pynvml()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._interval_s = 1.0 / sample_hz
        self.notes: list[str] = []
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError as exc:
            raise MeterError(
                f"NVML could not start ({exc}): is the NVIDIA driver installed and loaded "
                "(nvidia-smi works)? Without it, pass devices=[] or prefer='estimate'"
            ) from exc
        self._initialised = True
        try:
            tokens = self._requested(devices)
            self._devices = self._open(tokens, mig=mig, strict=strict, mode=mode)
        except BaseException:
            self.close()
            raise
        if any(d.mode == "power" for d in self._devices):
            self._start_sampler()

    # -- setup -------------------------------------------------------------------------------

    @staticmethod
    def _requested(devices: Sequence[int | str] | None) -> list[str] | None:
        if devices is not None:
            return [str(d) for d in devices]
        return visible_device_tokens(os.environ.get("CUDA_VISIBLE_DEVICES"))

    def _all_devices(self) -> list[tuple[int, str, Any]]:
        nv = self._nvml
        found = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            found.append((index, _text(nv.nvmlDeviceGetUUID(handle)), handle))
        return found

    def _resolve(self, token: str, every: list[tuple[int, str, Any]], mig: str) -> int:
        """The NVML index a ``CUDA_VISIBLE_DEVICES`` entry names."""
        if token.isdigit():
            index = int(token)
            if index >= len(every):
                raise MeterError(
                    f"GPU index {index} does not exist: NVML sees {len(every)} GPU(s) "
                    f"(indices 0-{len(every) - 1}); fix CUDA_VISIBLE_DEVICES or devices="
                )
            return index
        if token.startswith("MIG-"):
            return self._resolve_mig(token, mig)
        matches = [i for i, uuid, _ in every if uuid.startswith(token)]
        if len(matches) != 1:
            which = "no GPU has" if not matches else f"{len(matches)} GPUs share"
            raise MeterError(
                f"{which} the UUID {token!r}; list them with `nvidia-smi -L` and pass a full UUID"
            )
        return matches[0]

    def _resolve_mig(self, token: str, mig: str) -> int:
        nv = self._nvml
        try:
            handle = nv.nvmlDeviceGetHandleByUUID(token)
            parent = nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            index = int(nv.nvmlDeviceGetIndex(parent))
        except nv.NVMLError as exc:
            raise MeterError(
                f"MIG instance {token} not found ({exc}); list instances with `nvidia-smi -L`"
            ) from exc
        if mig == "error":
            raise MeterError(
                f"{token} is a MIG instance of GPU {index}: NVML reports energy only for the "
                f"whole GPU. Meter the parent with NvmlMeter(mig='parent') or devices=[{index}] "
                "and split its energy by share with hpsearch_budget.attribution.Attributor "
                f"(gpus={{'gpu:{index}': 1/7}} for a 1g slice of 7; the ledger's gpu_share only "
                "scales GPU-hours)"
            )
        self.notes.append(
            f"gpu:{index}: metering the whole GPU for MIG instance {token}; split its energy "
            f"by share (Attributor, gpus={{'gpu:{index}': share}})"
        )
        return index

    def _open(
        self, tokens: list[str] | None, *, mig: str, strict: bool, mode: str
    ) -> list[_Device]:
        every = self._all_devices()
        if tokens is None:
            indices = [i for i, _, _ in every]
        else:
            indices = []
            for token in tokens:
                try:
                    index = self._resolve(token, every, mig)
                except MeterError as exc:
                    if strict:
                        raise
                    self.notes.append(str(exc))
                    continue
                if index not in indices:
                    indices.append(index)
        devices = []
        for index in indices:
            _, uuid, handle = every[index]
            try:
                devices.append(self._probe(index, uuid, handle, mode))
            except MeterError as exc:
                if strict:
                    raise
                self.notes.append(str(exc))
        return devices

    def _probe(self, index: int, uuid: str, handle: Any, mode: str) -> _Device:
        """Pick counter or power mode for one GPU, by trying a read."""
        nv = self._nvml
        self._note_mig_mode(index, handle)
        if mode in ("auto", "counter"):
            try:
                raw = int(nv.nvmlDeviceGetTotalEnergyConsumption(handle))
                return _Device(index, uuid, handle, "counter", last_raw_mj=raw)
            except nv.NVMLError as exc:
                if mode == "counter" or exc.value != nv.NVML_ERROR_NOT_SUPPORTED:
                    raise MeterError(
                        f"gpu:{index} ({uuid}): cannot read its energy counter ({exc}); "
                        "it needs a Volta or newer GPU: use mode='power' or leave it out"
                    ) from exc
        try:
            watts = nv.nvmlDeviceGetPowerUsage(handle) / 1000.0
        except nv.NVMLError as exc:
            raise MeterError(
                f"gpu:{index} ({uuid}) reports neither energy nor power ({exc}): it cannot be "
                "metered; leave it out with devices=[...] and account for it by estimate"
            ) from exc
        return _Device(index, uuid, handle, "power", last_t=time.monotonic(), last_w=watts)

    def _note_mig_mode(self, index: int, handle: Any) -> None:
        nv = self._nvml
        try:
            current = nv.nvmlDeviceGetMigMode(handle)[0]
        except nv.NVMLError:
            return  # pre-Ampere GPUs have no MIG: "not supported" means "not in MIG mode"
        if current == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1):
            self.notes.append(
                f"gpu:{index} is in MIG mode: its energy is the whole GPU's, shared by all its "
                "MIG instances; attribute it by share"
            )

    # -- reading -----------------------------------------------------------------------------

    def domains(self) -> list[str]:
        return [d.domain for d in self._devices]

    @property
    def modes(self) -> dict[str, str]:
        """``counter`` or ``power`` per domain."""
        return {d.domain: d.mode for d in self._devices}

    def read(self) -> Reading:
        with self._lock:
            now = time.monotonic()
            for device in self._devices:
                if not device.lost:
                    self._update(device, now)
            energy = {d.domain: d.energy_j for d in self._devices}
        return Reading(now, energy, self._sources)

    @property
    def _sources(self) -> dict[str, Source]:
        return {
            d.domain: Source.MEASURED if d.mode == "counter" else Source.INTEGRATED
            for d in self._devices
        }

    def _update(self, device: _Device, now: float) -> None:
        nv = self._nvml
        try:
            if device.mode == "counter":
                self._count(device, int(nv.nvmlDeviceGetTotalEnergyConsumption(device.handle)))
            else:
                self._integrate(device, now, nv.nvmlDeviceGetPowerUsage(device.handle) / 1000.0)
        except nv.NVMLError as exc:
            # A GPU that fell off the bus, or a driver being reloaded, answers every call with
            # an error. Keep what was counted up to the last good read; the rest is unknowable.
            device.lost = True
            self._warn(
                f"{device.domain} ({device.uuid}) stopped answering ({exc}); its energy after "
                "the last good reading is not counted"
            )

    def _count(self, device: _Device, raw_mj: int) -> None:
        last = device.last_raw_mj
        if last is not None and raw_mj < last:
            # The counter runs from driver load; it went backwards, so the driver was reloaded
            # or the GPU reset. It restarted from zero: count what it has gained since.
            self._warn(
                f"{device.domain}: the NVML energy counter went backwards ({last} -> {raw_mj} "
                "mJ; driver reload or GPU reset); energy between the last read and the reset "
                "is not counted"
            )
            last = 0
        if last is not None:
            device.energy_j += (raw_mj - last) / 1000.0
        device.last_raw_mj = raw_mj

    @staticmethod
    def _integrate(device: _Device, now: float, watts: float) -> None:
        if device.last_t is not None:
            device.energy_j += 0.5 * (watts + device.last_w) * max(0.0, now - device.last_t)
        device.last_t, device.last_w = now, watts

    def _warn(self, message: str) -> None:
        if message not in self.notes:
            self.notes.append(message)
            log.warning(message)

    # -- power sampler -----------------------------------------------------------------------

    def _start_sampler(self) -> None:
        self._thread = threading.Thread(target=self._sample, name="hpaudit-nvml", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        # Event.wait, not sleep: close() wakes the thread at once.
        while not self._stop.wait(self._interval_s):
            with self._lock:
                now = time.monotonic()
                for device in self._devices:
                    if device.mode == "power" and not device.lost:
                        self._update(device, now)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if getattr(self, "_initialised", False):
            self._initialised = False
            with contextlib.suppress(self._nvml.NVMLError):  # nothing left to release
                self._nvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

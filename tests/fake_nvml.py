"""A pynvml stand-in for tests: this machine has no NVIDIA GPU, so NVML is the one edge we fake.

It speaks the subset of the pynvml API that koboldtui.gpu.nvml uses, with the same error
type (``NVMLError`` carrying ``.value``) and constants, and lets a test add GPUs of
different sizes, make a call fail, make a GPU disappear, or make init fail as it does
without a driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

GiB = 1024**3

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0
NVML_VALUE_NOT_AVAILABLE_ulonglong = (1 << 64) - 1


class NVMLError(Exception):
    """Same shape as pynvml.NVMLError: the NVML return code is in ``value``."""

    def __init__(self, value: int) -> None:
        super().__init__(f"fake NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    """One simulated GPU; ``failing`` names pynvml functions that raise NOT_SUPPORTED for it."""

    uuid: str
    name: str
    total: int
    used: int = 0
    util_gpu: int = 0
    util_memory: int = 0
    temperature: int = 40
    power_mw: int = 50_000
    limit_mw: int = 300_000
    fan: int = 30
    pci_bus_id: str = "00000000:01:00.0"
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    lost: bool = False  # every call raises GPU_IS_LOST (fell off the bus)


class FakeNvml:
    """A pynvml-like object; pass it to ``koboldtui.gpu.nvml.set_nvml_module``."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None, driver: str = "550.54.14") -> None:
        self.gpus: list[FakeGpu] = list(gpus or [])
        self.driver = driver
        self.init_error: int | None = None
        self.init_calls = 0
        self.shutdown_calls = 0
        self.initialised = False
        for name, value in globals().items():
            if name.startswith("NVML_"):
                setattr(self, name, value)

    # --- test controls -------------------------------------------------------------
    def remove(self, uuid: str) -> None:
        """The GPU is gone at the next device count (unplugged, or hidden after a reset)."""
        self.gpus = [g for g in self.gpus if g.uuid != uuid]

    def gpu(self, uuid: str) -> FakeGpu:
        return next(g for g in self.gpus if g.uuid == uuid)

    # --- pynvml API ----------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self.initialised = False

    def _check(self) -> None:
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        self._check()
        if index >= len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _device(self, handle: FakeGpu, fn: str) -> FakeGpu:
        self._check()
        if handle.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if fn in handle.failing:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return handle

    def nvmlDeviceGetUUID(self, handle: FakeGpu) -> str:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: FakeGpu) -> bytes:
        # Old bindings return bytes: the reader must cope.
        return self._device(handle, "nvmlDeviceGetName").name.encode()

    def nvmlDeviceGetPciInfo(self, handle: FakeGpu) -> Any:
        gpu = self._device(handle, "nvmlDeviceGetPciInfo")
        return SimpleNamespace(busId=gpu.pci_bus_id)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGpu) -> Any:
        gpu = self._device(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=gpu.total, used=gpu.used, free=gpu.total - gpu.used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGpu) -> Any:
        gpu = self._device(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=gpu.util_gpu, memory=gpu.util_memory)

    def nvmlDeviceGetTemperature(self, handle: FakeGpu, sensor: int) -> int:
        assert sensor == NVML_TEMPERATURE_GPU
        return self._device(handle, "nvmlDeviceGetTemperature").temperature

    def nvmlDeviceGetPowerUsage(self, handle: FakeGpu) -> int:
        return self._device(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeGpu) -> int:
        return self._device(handle, "nvmlDeviceGetEnforcedPowerLimit").limit_mw

    def nvmlDeviceGetFanSpeed(self, handle: FakeGpu) -> int:
        return self._device(handle, "nvmlDeviceGetFanSpeed").fan

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        gpu = self._device(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(
                pid=pid, usedGpuMemory=NVML_VALUE_NOT_AVAILABLE_ulonglong if used is None else used
            )
            for pid, used in gpu.processes
        ]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: FakeGpu) -> list[Any]:
        self._device(handle, "nvmlDeviceGetGraphicsRunningProcesses")
        return []


def three_gpus() -> FakeNvml:
    """A workstation with a 24 GiB, an 8 GiB and a 12 GiB card (PCI order = index order)."""
    return FakeNvml(
        [
            FakeGpu(
                "GPU-aaaa-24g",
                "NVIDIA GeForce RTX 4090",
                24 * GiB,
                used=2 * GiB,
                util_gpu=35,
                pci_bus_id="00000000:01:00.0",
                processes=[(1111, 1 * GiB)],
            ),
            FakeGpu(
                "GPU-bbbb-8g",
                "NVIDIA GeForce RTX 3070",
                8 * GiB,
                used=1 * GiB,
                pci_bus_id="00000000:02:00.0",
            ),
            FakeGpu(
                "GPU-cccc-12g",
                "NVIDIA GeForce RTX 3060",
                12 * GiB,
                used=0,
                pci_bus_id="00000000:03:00.0",
            ),
        ]
    )

"""The one choke point for NVML: live GPU facts as immutable snapshots, "not available" instead of exceptions.

Only this module imports ``pynvml`` (package nvidia-ml-py). NVML is initialised lazily on
the first read and shut down at exit; every NVML failure becomes a ``None`` field, a
skipped device, or an empty inventory whose ``reason`` says in words what is wrong. Tests
inject a pynvml-like fake with ``set_nvml_module``.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

MiB = 1024 * 1024


class GpuProcess(NamedTuple):
    """A process holding memory on a GPU; ``is_ours`` marks koboldtui's own instances."""

    pid: int
    used_memory: int | None  # bytes; None where the driver does not say (e.g. WDDM, containers)
    is_ours: bool


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU at one moment; any field NVML could not read is None."""

    index: int  # NVML index = PCI bus order, the same as CUDA with CUDA_DEVICE_ORDER=PCI_BUS_ID
    uuid: str
    pci_bus_id: str | None
    name: str | None
    memory_total: int | None  # bytes
    memory_used: int | None
    memory_free: int | None
    utilization_gpu: int | None  # percent
    utilization_memory: int | None
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    fan_percent: int | None
    processes: tuple[GpuProcess, ...] = ()

    @property
    def label(self) -> str:
        """How a person refers to this GPU: 'GPU 0 (NVIDIA RTX 4090)'."""
        return f"GPU {self.index} ({self.name})" if self.name else f"GPU {self.index}"


@dataclass(frozen=True)
class GpuInventory:
    """Every GPU NVML sees, or none with ``reason`` saying why."""

    available: bool  # NVML itself works (it may still see no GPU: then reason says so)
    reason: str | None
    driver: str | None
    gpus: tuple[GpuSnapshot, ...] = ()
    taken_at: float = 0.0

    def by_uuid(self, uuid: str) -> GpuSnapshot | None:
        """The GPU with this UUID, if present now."""
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        return None

    def by_index(self, index: int) -> GpuSnapshot | None:
        """The GPU at this NVML index, if present now."""
        for gpu in self.gpus:
            if gpu.index == index:
                return gpu
        return None


def _text(value: Any) -> str:
    """NVML strings are bytes in old bindings and str in new ones."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe_init_error(module: Any, exc: BaseException) -> str:
    """Turn an nvmlInit failure into what a person should know and do."""
    code = getattr(exc, "value", None)

    def is_(name: str) -> bool:
        return code is not None and code == getattr(module, name, object())

    if is_("NVML_ERROR_LIBRARY_NOT_FOUND"):
        return (
            "NVML not found: no NVIDIA driver on this machine (libnvidia-ml could not be "
            "loaded); instances run on the CPU. Install the NVIDIA driver to use a GPU"
        )
    if is_("NVML_ERROR_DRIVER_NOT_LOADED"):
        return (
            "the NVIDIA driver is installed but not loaded; check `nvidia-smi`, "
            "load the kernel module or reboot"
        )
    if is_("NVML_ERROR_NO_PERMISSION"):
        return "no permission to talk to the NVIDIA driver; check the /dev/nvidia* permissions"
    if is_("NVML_ERROR_LIB_RM_VERSION_MISMATCH"):
        return (
            "the NVIDIA driver library and kernel module versions differ (a driver update "
            "without reboot?); reboot to finish the driver update"
        )
    if is_("NVML_ERROR_FUNCTION_NOT_FOUND"):
        return "the NVIDIA driver is too old for this NVML binding; update the driver"
    return f"NVML could not start ({exc}); check `nvidia-smi`"


class NvmlSession:
    """Owns NVML's init/shutdown and every call into it, so errors are handled in one place."""

    def __init__(self, module_loader: Callable[[], Any] | None = None) -> None:
        self._lock = threading.RLock()
        self._loader = module_loader or _import_pynvml
        self._module: Any = None
        self._initialised = False
        self._failure: str | None = None
        self._import_failed = False
        self._atexit_registered = False

    def _ensure(self) -> str | None:
        """Initialise NVML if needed; return the reason it is unavailable, or None."""
        if self._initialised:
            return None
        if self._import_failed:
            return self._failure
        if self._module is None:
            try:
                self._module = self._loader()
            except ImportError:
                self._import_failed = True
                self._failure = (
                    "NVML not found: the nvidia-ml-py package is not installed; "
                    "pip install nvidia-ml-py to see GPUs"
                )
                return self._failure
        module = self._module
        try:
            module.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - every NVML failure becomes a reason
            # Retried on the next read: a driver may load later (e.g. after modprobe).
            self._failure = _describe_init_error(module, exc)
            return self._failure
        self._initialised = True
        self._failure = None
        if not self._atexit_registered:
            atexit.register(self.shutdown)
            self._atexit_registered = True
        return None

    def call(self, name: str, *args: Any) -> Any:
        """``pynvml.<name>(*args)``, or None on any NVML error (not supported, GPU lost, ...)."""
        fn = getattr(self._module, name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # noqa: BLE001 - "not available" is a value here
            return None

    def constant(self, name: str, default: Any = None) -> Any:
        """A pynvml constant (e.g. NVML_TEMPERATURE_GPU), tolerant of old bindings."""
        return getattr(self._module, name, default)

    def read(
        self, our_pids: Collection[int] = (), clock: Callable[[], float] = time.time
    ) -> GpuInventory:
        """A full inventory now; never raises."""
        with self._lock:
            try:
                reason = self._ensure()
                if reason is not None:
                    return GpuInventory(False, reason, None, (), clock())
                return self._read_devices(set(our_pids), clock)
            except Exception as exc:  # noqa: BLE001 - last line of defence for the UI
                return GpuInventory(
                    False, f"reading the GPUs failed unexpectedly: {exc}", None, (), clock()
                )

    def _read_devices(self, ours: set[int], clock: Callable[[], float]) -> GpuInventory:
        driver_raw = self.call("nvmlSystemGetDriverVersion")
        driver = _text(driver_raw) if driver_raw is not None else None
        count = self.call("nvmlDeviceGetCount")
        if count is None:
            return GpuInventory(
                False,
                "NVML started but could not count the GPUs; check `nvidia-smi`",
                driver,
                (),
                clock(),
            )
        gpus = []
        for index in range(int(count)):
            snapshot = self._read_device(index, ours)
            if snapshot is not None:
                gpus.append(snapshot)
        reason = None
        if not gpus:
            reason = "the NVIDIA driver sees no GPU; instances run on the CPU"
        return GpuInventory(True, reason, driver, tuple(gpus), clock())

    def _read_device(self, index: int, ours: set[int]) -> GpuSnapshot | None:
        handle = self.call("nvmlDeviceGetHandleByIndex", index)
        if handle is None:
            return None  # the GPU fell off the bus or went away between count and read
        uuid_raw = self.call("nvmlDeviceGetUUID", handle)
        if uuid_raw is None:
            return None  # without a UUID we cannot keep its priority: leave it out
        name = self.call("nvmlDeviceGetName", handle)
        pci = self.call("nvmlDeviceGetPciInfo", handle)
        pci_bus_id = None
        if pci is not None:
            bus = getattr(pci, "busId", None) or getattr(pci, "busIdLegacy", None)
            pci_bus_id = _text(bus) if bus is not None else None
        memory = self.call("nvmlDeviceGetMemoryInfo", handle)
        util = self.call("nvmlDeviceGetUtilizationRates", handle)
        temperature = self.call(
            "nvmlDeviceGetTemperature", handle, self.constant("NVML_TEMPERATURE_GPU", 0)
        )
        power = self.call("nvmlDeviceGetPowerUsage", handle)  # milliwatts
        limit = self.call("nvmlDeviceGetEnforcedPowerLimit", handle)
        fan = self.call("nvmlDeviceGetFanSpeed", handle)
        return GpuSnapshot(
            index=index,
            uuid=_text(uuid_raw),
            pci_bus_id=pci_bus_id,
            name=_text(name) if name is not None else None,
            memory_total=_int_attr(memory, "total"),
            memory_used=_int_attr(memory, "used"),
            memory_free=_int_attr(memory, "free"),
            utilization_gpu=_int_attr(util, "gpu"),
            utilization_memory=_int_attr(util, "memory"),
            temperature_c=int(temperature) if temperature is not None else None,
            power_draw_w=power / 1000.0 if power is not None else None,
            power_limit_w=limit / 1000.0 if limit is not None else None,
            fan_percent=int(fan) if fan is not None else None,
            processes=self._processes(handle, ours),
        )

    def _processes(self, handle: Any, ours: set[int]) -> tuple[GpuProcess, ...]:
        found: dict[int, GpuProcess] = {}
        for getter in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetGraphicsRunningProcesses",
        ):
            for proc in self.call(getter, handle) or ():
                pid = int(getattr(proc, "pid", -1))
                if pid < 0:
                    continue
                used = getattr(proc, "usedGpuMemory", None)
                # NVML reports "not available" as None or as a huge sentinel value.
                used_bytes = int(used) if isinstance(used, int) and 0 <= used < 1 << 60 else None
                prior = found.get(pid)
                if prior is not None and prior.used_memory is not None:
                    used_bytes = max(prior.used_memory, used_bytes or 0)
                found[pid] = GpuProcess(pid, used_bytes, pid in ours)
        return tuple(sorted(found.values()))

    def shutdown(self) -> None:
        """Release NVML (at exit, or before swapping the module in tests)."""
        with self._lock:
            if self._initialised:
                self.call("nvmlShutdown")
            self._initialised = False


def _int_attr(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None) if obj is not None else None
    return int(value) if value is not None else None


def _import_pynvml() -> ModuleType:
    import pynvml  # the only pynvml import in koboldtui

    return pynvml


_session = NvmlSession()
_session_lock = threading.Lock()


def set_nvml_module(module: Any | None) -> None:
    """Use ``module`` (a pynvml-like object) instead of pynvml; None goes back to the real one.

    Tests and the CLI's in-process tests call this; a module that raises ImportError when
    loaded can be simulated with ``set_nvml_loader``.
    """
    if module is None:
        set_nvml_loader(None)
    else:
        set_nvml_loader(lambda: module)


def set_nvml_loader(loader: Callable[[], Any] | None) -> None:
    """Replace how the NVML module is obtained (None = ``import pynvml``); shuts the old session down."""
    global _session
    with _session_lock:
        _session.shutdown()
        _session = NvmlSession(loader)


def read_inventory(
    our_pids: Iterable[int] = (), clock: Callable[[], float] = time.time
) -> GpuInventory:
    """Every GPU now, marking processes whose pid is in ``our_pids``; never raises."""
    with _session_lock:
        session = _session
    return session.read(set(our_pids), clock)


def shutdown() -> None:
    """Release NVML now (it is also released at exit)."""
    with _session_lock:
        _session.shutdown()

"""NVML readings become snapshots, and every NVML failure becomes words, never an exception."""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    FakeNvml,
    GiB,
    three_gpus,
)

import koboldtui
from koboldtui.gpu import nvml
from koboldtui.gpu.nvml import GpuProcess, read_inventory, set_nvml_loader, set_nvml_module


@pytest.fixture
def fake() -> Iterator[FakeNvml]:
    module = three_gpus()
    set_nvml_module(module)
    yield module
    set_nvml_module(None)


def test_snapshots_carry_every_field(fake: FakeNvml) -> None:
    inv = read_inventory(our_pids={1111}, clock=lambda: 123.0)
    assert (
        inv.available and inv.reason is None and inv.driver == "550.54.14" and inv.taken_at == 123.0
    )
    assert [g.uuid for g in inv.gpus] == ["GPU-aaaa-24g", "GPU-bbbb-8g", "GPU-cccc-12g"]
    big = inv.gpus[0]
    assert (
        big.index == 0 and big.name == "NVIDIA GeForce RTX 4090"
    )  # bytes from old bindings decoded
    assert big.pci_bus_id == "00000000:01:00.0"
    assert (big.memory_total, big.memory_used, big.memory_free) == (24 * GiB, 2 * GiB, 22 * GiB)
    assert (big.utilization_gpu, big.temperature_c, big.fan_percent) == (35, 40, 30)
    assert (big.power_draw_w, big.power_limit_w) == (50.0, 300.0)
    assert big.processes == (GpuProcess(1111, 1 * GiB, True),)
    assert inv.by_index(2).memory_total == 12 * GiB
    assert inv.by_uuid("GPU-bbbb-8g").label == "GPU 1 (NVIDIA GeForce RTX 3070)"


def test_other_peoples_processes_are_not_ours_and_unknown_memory_is_none(fake: FakeNvml) -> None:
    fake.gpu("GPU-bbbb-8g").processes = [(2222, None), (3333, 5 * GiB)]
    gpu = read_inventory(our_pids={3333}).by_uuid("GPU-bbbb-8g")
    assert gpu.processes == (GpuProcess(2222, None, False), GpuProcess(3333, 5 * GiB, True))


def test_unsupported_fields_are_none_not_errors(fake: FakeNvml) -> None:
    fake.gpu("GPU-cccc-12g").failing = {
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetComputeRunningProcesses",
    }
    gpu = read_inventory().by_uuid("GPU-cccc-12g")
    assert gpu is not None and gpu.memory_total == 12 * GiB
    assert (gpu.fan_percent, gpu.power_draw_w, gpu.temperature_c, gpu.processes) == (
        None,
        None,
        None,
        (),
    )


def test_a_lost_gpu_is_left_out_and_the_rest_still_read(fake: FakeNvml) -> None:
    fake.gpu("GPU-bbbb-8g").lost = True
    inv = read_inventory()
    assert [g.uuid for g in inv.gpus] == ["GPU-aaaa-24g", "GPU-cccc-12g"]


def test_a_gpu_that_disappears_between_reads(fake: FakeNvml) -> None:
    assert len(read_inventory().gpus) == 3
    fake.remove("GPU-aaaa-24g")
    inv = read_inventory()
    assert [g.uuid for g in inv.gpus] == ["GPU-bbbb-8g", "GPU-cccc-12g"]
    assert [g.index for g in inv.gpus] == [0, 1]


def test_no_gpu_at_all_says_so(fake: FakeNvml) -> None:
    fake.gpus = []
    inv = read_inventory()
    assert inv.available and inv.gpus == ()
    assert "sees no GPU" in inv.reason


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (NVML_ERROR_LIBRARY_NOT_FOUND, "NVML not found: no NVIDIA driver on this machine"),
        (NVML_ERROR_DRIVER_NOT_LOADED, "driver is installed but not loaded"),
        (777, "NVML could not start"),
    ],
)
def test_init_failures_become_reasons(code: int, words: str) -> None:
    module = FakeNvml()
    module.init_error = code
    set_nvml_module(module)
    try:
        inv = read_inventory()
        assert not inv.available and inv.gpus == () and inv.driver is None
        assert words in inv.reason
    finally:
        set_nvml_module(None)


def test_init_is_retried_so_a_driver_loaded_later_is_seen() -> None:
    module = three_gpus()
    module.init_error = NVML_ERROR_DRIVER_NOT_LOADED
    set_nvml_module(module)
    try:
        assert not read_inventory().available
        module.init_error = None
        assert len(read_inventory().gpus) == 3
        read_inventory()
        assert module.init_calls == 2  # initialised once, then reused
    finally:
        set_nvml_module(None)
    assert module.shutdown_calls == 1  # swapping the module shut the old session down


def test_missing_nvml_package_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pynvml(name: str, *args, **kwargs):
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    set_nvml_loader(None)
    try:
        inv = read_inventory()
        assert not inv.available and "pip install nvidia-ml-py" in inv.reason
    finally:
        monkeypatch.undo()
        set_nvml_loader(None)


def test_a_broken_binding_never_raises_to_the_caller() -> None:
    class Exploding(FakeNvml):
        def nvmlDeviceGetCount(self) -> int:
            raise ZeroDivisionError("binding bug")

    set_nvml_module(Exploding())
    try:
        inv = read_inventory()
        assert not inv.available and "could not count" in inv.reason
    finally:
        set_nvml_module(None)


def test_real_pynvml_without_a_driver_reports_not_available() -> None:
    """The real path on this GPU-less machine: pynvml imports, nvmlInit fails, we say why."""
    code = (
        "from koboldtui.gpu.nvml import read_inventory; inv = read_inventory();"
        "print(inv.available, len(inv.gpus)); print(inv.reason)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    first, reason = out.stdout.splitlines()[:2]
    if first.startswith("True"):  # a machine with a working driver: the inventory is real
        assert reason == "None"
        return
    assert first == "False 0"
    assert "NVIDIA driver" in reason or "NVML" in reason


def test_only_gpu_nvml_imports_pynvml() -> None:
    root = Path(koboldtui.__file__).parent
    offenders = []
    for file in root.rglob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "pynvml" for n in names):
                offenders.append(file.relative_to(root).as_posix())
    assert set(offenders) == {"gpu/nvml.py"}


def test_shutdown_releases_nvml(fake: FakeNvml) -> None:
    read_inventory()
    nvml.shutdown()
    assert fake.shutdown_calls == 1 and not fake.initialised
    assert len(read_inventory().gpus) == 3  # lazily re-initialised

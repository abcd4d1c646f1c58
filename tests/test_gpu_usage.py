"""VRAM per instance by process id: the instance's own pid, and every process of its group (fake NVML)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fake_nvml import FakeGpu, FakeNvml, GiB

from koboldtui.gpu.nvml import NvmlSession
from koboldtui.gpu.usage import vram_by_instance


def test_a_wrapper_child_on_the_gpu_counts_for_its_instance() -> None:
    # like `koboldtui start` does: the instance leads its own session; its server is a child
    wrapper = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])"],
        start_new_session=True,
    )
    try:
        child = None
        for _ in range(200):
            out = subprocess.run(["pgrep", "-P", str(wrapper.pid)], capture_output=True, text=True,
                                 check=False).stdout
            if out.strip():
                child = int(out.split()[0])
                break
            time.sleep(0.05)
        assert child is not None
        fake = FakeNvml([
            FakeGpu("GPU-a", "A", 24 * GiB, processes=[(child, 3 * GiB), (999_999, 1 * GiB)]),
            FakeGpu("GPU-b", "B", 24 * GiB, pci_bus_id="00000000:02:00.0",
                    processes=[(4242, 2 * GiB), (child, 1 * GiB)]),
        ])
        inventory = NvmlSession(lambda: fake).read()
        usage = vram_by_instance(inventory, {"text": wrapper.pid, "other": 4242, "cpu": 0},
                                 group_of=lambda pid: wrapper.pid if pid == child else None)
        assert usage == {"text": 4 * GiB, "other": 2 * GiB}  # the stranger's 1 GiB is nobody's
        # and with the real process-group lookup
        assert vram_by_instance(inventory, {"text": wrapper.pid})["text"] == 4 * GiB
    finally:
        os.killpg(wrapper.pid, signal.SIGKILL)  # the group we started: wrapper and child
        wrapper.wait()


def test_memory_nvml_cannot_read_is_unknown_not_zero() -> None:
    fake = FakeNvml([FakeGpu("GPU-a", "A", 24 * GiB, processes=[(4242, None)])])
    inventory = NvmlSession(lambda: fake).read()
    assert vram_by_instance(inventory, {"main": 4242}, group_of=lambda pid: None) == {"main": None}

"""VRAM held by each instance, read from NVML's per-process list by process id.

An instance runs in its own session, so every process it starts (a wrapper script's
server, a worker it forks) is in the process group whose id is the instance's pid: a
GPU process counts for the instance when its pid or its process group matches. Works
for every kind that runs here (``koboldtui serve`` or any command); a remote instance's
processes are on another box and are not seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from koboldtui.gpu.nvml import GpuInventory


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError, OSError):
        return None  # gone, or another user's (a container may show host pids)


def vram_by_instance(
    inventory: GpuInventory,
    instance_pids: Mapping[str, int],
    *,
    group_of: Callable[[int], int | None] = _group_of,
) -> dict[str, int | None]:
    """Bytes of VRAM per instance name over all GPUs; None where NVML does not say how much.

    Instances holding no GPU memory are left out (on a CPU-only box the result is empty).
    """
    by_pid = {pid: name for name, pid in instance_pids.items() if pid}
    totals: dict[str, int | None] = {}
    for gpu in inventory.gpus:
        for proc in gpu.processes:
            name = by_pid.get(proc.pid)
            if name is None:
                group = group_of(proc.pid)
                name = by_pid.get(group) if group is not None else None
            if name is None:
                continue
            if proc.used_memory is None:
                totals.setdefault(name, None)
                continue
            totals[name] = (totals.get(name) or 0) + proc.used_memory
    return totals

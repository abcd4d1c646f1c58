"""A draft built from what the panel already knows, so ``n`` and ``e`` open the form at once.

The backend's own draft (a probed free port, the stored spec and secrets) comes from a
worker a moment later and replaces every field the person has not touched yet; the form
does not save before it has arrived, so a guess is never stored.
"""

from __future__ import annotations

from dataclasses import replace

from koboldtui.config import ServeConfig
from koboldtui.tui.backend import GpuReport, InstanceDraft, InstanceView

FIRST_PORT = 5001


def new_instance_guess(instances: tuple[InstanceView, ...], report: GpuReport) -> InstanceDraft:
    """A new instance as the backend would make it: a free name, the next unused port, the enabled GPUs."""
    names = {i.name for i in instances}
    name, n = "default", 2
    while name in names:
        name, n = f"instance-{n}", n + 1
    ports = {i.port for i in instances}
    port = FIRST_PORT
    while port in ports:
        port += 1
    devices = tuple(d for d in report.cuda_visible_devices.split(",") if d)
    return InstanceDraft(ServeConfig(name=name, port=port, gpu_layers=-1 if devices else 0), devices)


def edit_guess(inst: InstanceView) -> InstanceDraft:
    """An instance's form before its stored spec arrives: name, port, model and kind from its row."""
    model = None if inst.model in ("", "bundled") else inst.model
    return replace(InstanceDraft(ServeConfig(name=inst.name, port=inst.port, model=model)), kind=inst.kind)

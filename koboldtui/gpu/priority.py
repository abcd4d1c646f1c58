"""Turns the user's GPU order and an instance's GPU choice into the environment and flags its process gets.

CUDA reads ``CUDA_VISIBLE_DEVICES`` once at start, so the GPU set of an instance is fixed
by its environment: ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (so indices agree with NVML and
nvidia-smi) and the UUIDs in priority order, the first one being CUDA device 0 and
therefore llama.cpp's main GPU. CPU-only hides every GPU and forces ``--gpu-layers 0``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from koboldtui.config import ServeConfig
from koboldtui.gpu.nvml import GpuInventory
from koboldtui.store.gpus import GpuRow, UnknownGpuError

Selection = Literal["auto", "cpu"] | tuple[str, ...]


class GpuSelectionError(ValueError):
    """An instance's GPU choice cannot be honoured; the message says what to change."""


def parse_selection(value: str | Sequence[str | int] | None) -> Selection:
    """'auto' (or None/empty) | 'cpu' | '0,GPU-abc' / ['0', 'GPU-abc'] → a Selection."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "auto", "all"):
            return "auto"
        if text.lower() in ("cpu", "none"):
            return "cpu"
        items: list[str] = [part.strip() for part in text.split(",") if part.strip()]
    else:
        items = [str(v).strip() for v in value if str(v).strip()]
        if not items:
            return "auto"
    if any(item.lower() in ("auto", "cpu") for item in items) and len(items) > 1:
        raise GpuSelectionError("'auto' and 'cpu' cannot be mixed with GPU names: pick one")
    if len(items) == 1 and items[0].lower() in ("auto", "cpu"):
        return "auto" if items[0].lower() == "auto" else "cpu"
    if len(set(items)) != len(items):
        raise GpuSelectionError(f"a GPU is listed twice in {','.join(items)}: list each GPU once")
    return tuple(items)


def resolve_ref(ref: str | int, rows: Sequence[GpuRow], inventory: GpuInventory) -> str:
    """A GPU reference (NVML index, UUID, or a unique UUID prefix) → its UUID."""
    text = str(ref).strip()
    if text.isdigit():
        gpu = inventory.by_index(int(text))
        if gpu is None:
            present = ", ".join(str(g.index) for g in inventory.gpus) or "none"
            why = "" if inventory.available else f" ({inventory.reason})"
            raise UnknownGpuError(
                f"there is no GPU {text} now (present: {present}){why}; "
                "run `koboldtui gpus` to list them"
            )
        return gpu.uuid
    known = {r.uuid for r in rows} | {g.uuid for g in inventory.gpus}
    if text in known:
        return text
    matches = sorted(u for u in known if u.lower().startswith(text.lower()))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownGpuError(
            f"{text} matches several GPUs ({', '.join(matches)}): give more of the UUID"
        )
    raise UnknownGpuError(
        f"no GPU matches {text} (known: {', '.join(sorted(known)) or 'none'}); "
        "run `koboldtui gpus` to list them"
    )


@dataclass(frozen=True)
class PlannedGpu:
    """One GPU an instance will use, in CUDA device order."""

    uuid: str
    index: int | None  # NVML index now (None if NVML could not see it)
    name: str | None
    memory_free: int | None


@dataclass(frozen=True)
class GpuPlan:
    """What an instance's process gets: env, and the llama.cpp flags that must agree with it."""

    cpu_only: bool
    gpus: tuple[PlannedGpu, ...]
    tensor_split: str | None  # only when several GPUs
    main_gpu: int  # always 0: the highest-priority GPU is first in CUDA_VISIBLE_DEVICES
    notes: tuple[str, ...] = ()

    @property
    def visible_devices(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value ('' hides every GPU)."""
        return ",".join(g.uuid for g in self.gpus)

    def env(self) -> dict[str, str]:
        """Environment variables to add to the child's environment."""
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": self.visible_devices}

    def apply(self, config: ServeConfig) -> ServeConfig:
        """The config with gpu_layers/tensor_split/main_gpu made consistent with this plan."""
        if self.cpu_only:
            return replace(config, gpu_layers=0, tensor_split=None, main_gpu=0)
        return replace(config, tensor_split=self.tensor_split, main_gpu=self.main_gpu)


def tensor_split_by_free(free: Sequence[int | None]) -> str | None:
    """llama.cpp ``--tensor-split`` weights proportional to free VRAM ('0.67,0.33'); equal if unknown."""
    if len(free) < 2:
        return None
    if any(f is None or f <= 0 for f in free):
        weights = [1.0] * len(free)
    else:
        weights = [float(f) for f in free if f is not None]
    total = sum(weights)
    parts = [max(0.01, round(w / total, 2)) for w in weights]
    return ",".join(f"{p:g}" for p in parts)


def plan_gpus(
    selection: Selection | str | Sequence[str | int] | None,
    rows: Sequence[GpuRow],
    inventory: GpuInventory,
) -> GpuPlan:
    """Decide an instance's GPUs: 'auto' = enabled present GPUs by priority, 'cpu', or an explicit list.

    An explicit list is used in the order given (first = main GPU); it may not name a
    disabled or absent GPU. Without NVML, 'auto' falls back to the CPU and an explicit
    list is passed through unchecked (with a note).
    """
    if not (isinstance(selection, tuple) or selection in ("auto", "cpu")):
        selection = parse_selection(selection)  # type: ignore[arg-type]
    if selection == "cpu":
        return GpuPlan(True, (), None, 0)
    if selection == "auto":
        return _plan_auto(rows, inventory)
    assert isinstance(selection, tuple)
    if not inventory.available:
        planned = tuple(PlannedGpu(ref, None, None, None) for ref in selection)
        return GpuPlan(
            False,
            planned,
            tensor_split_by_free([None] * len(planned)),
            0,
            (
                f"could not check the GPUs ({inventory.reason}); passing {','.join(selection)} to CUDA as given",
            ),
        )
    by_uuid = {r.uuid: r for r in rows}
    planned_list = []
    for ref in selection:
        uuid = resolve_ref(ref, rows, inventory)
        row = by_uuid.get(uuid)
        gpu = inventory.by_uuid(uuid)
        label = gpu.label if gpu else f"GPU {uuid}"
        if gpu is None:
            raise GpuSelectionError(
                f"{label} is not present now: plug it back in or pick another GPU"
            )
        if row is not None and not row.enabled:
            raise GpuSelectionError(
                f"{label} is disabled: enable it with `koboldtui gpus enable {uuid}` or pick another GPU"
            )
        if any(p.uuid == uuid for p in planned_list):
            raise GpuSelectionError(f"{label} is listed twice: list each GPU once")
        planned_list.append(PlannedGpu(uuid, gpu.index, gpu.name, gpu.memory_free))
    planned = tuple(planned_list)
    return GpuPlan(False, planned, tensor_split_by_free([g.memory_free for g in planned]), 0)


def _plan_auto(rows: Sequence[GpuRow], inventory: GpuInventory) -> GpuPlan:
    if not inventory.available or not inventory.gpus:
        reason = inventory.reason or "no GPU found"
        return GpuPlan(True, (), None, 0, (f"running on the CPU: {reason}",))
    remembered = {r.uuid for r in rows}
    ordered = [r.uuid for r in rows if r.enabled]
    # GPUs not reconciled into the store yet go last, in NVML order, so nothing is lost.
    ordered += [g.uuid for g in inventory.gpus if g.uuid not in remembered]
    planned = []
    for uuid in ordered:
        gpu = inventory.by_uuid(uuid)
        if gpu is not None:
            planned.append(PlannedGpu(uuid, gpu.index, gpu.name, gpu.memory_free))
    if not planned:
        return GpuPlan(
            True,
            (),
            None,
            0,
            (
                "running on the CPU: every GPU is disabled; enable one with `koboldtui gpus enable INDEX`",
            ),
        )
    return GpuPlan(False, tuple(planned), tensor_split_by_free([g.memory_free for g in planned]), 0)

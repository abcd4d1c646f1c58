"""Says before start whether an instance fits in its GPUs' free VRAM, and the largest --gpu-layers that does.

An out-of-memory inside llama.cpp shows up late and cryptically; this estimate, made from
the GGUF header and live NVML numbers, turns it into one sentence a person can act on.
The layer placement mirrors llama.cpp's: the last ``gpu_layers`` transformer layers go to
the GPUs (split by ``--tensor-split``), the output head needs ``gpu_layers > n_layer``,
the input embeddings stay on the CPU, and each layer's KV cache lives with the layer.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from koboldtui.gpu.priority import GpuPlan, PlannedGpu
from koboldtui.models.metadata import GgufMetadata, read_metadata

MiB = 1024**2
GiB = 1024**3
CUDA_OVERHEAD_BYTES = 400 * MiB  # CUDA context + cuBLAS workspace per GPU
MAX_UBATCH = 1024


def gib(n: float) -> str:
    """Bytes as '9.8 GiB' (the unit people read off nvidia-smi)."""
    return f"{n / GiB:.1f} GiB"


@dataclass(frozen=True)
class VramEstimate:
    """What one configuration needs on each GPU, and why (bytes)."""

    gpu_layers: int  # effective, clamped to 0..n_layer+1
    weights: tuple[int, ...]
    kv_cache: tuple[int, ...]
    compute: tuple[int, ...]
    overhead: tuple[int, ...]

    @property
    def per_gpu(self) -> tuple[int, ...]:
        """Total need on each GPU, in CUDA device order."""
        return tuple(
            sum(parts) for parts in zip(self.weights, self.kv_cache, self.compute, self.overhead)
        )

    @property
    def total(self) -> int:
        """Need summed over the GPUs."""
        return sum(self.per_gpu)


def effective_gpu_layers(meta: GgufMetadata, gpu_layers: int) -> int:
    """llama.cpp's reading of --gpu-layers: negative or too many = everything (n_layer + output)."""
    everything = meta.block_count + 1
    return everything if gpu_layers < 0 or gpu_layers > everything else gpu_layers


def _layer_devices(n_layer: int, gpu_layers: int, split: Sequence[float]) -> list[int | None]:
    """Device index (or None = CPU) of each repeating layer and, last, of the output head."""
    n_dev = len(split)
    total = sum(split) or 1.0
    cumulative, acc = [], 0.0
    for weight in split:
        acc += weight / total
        cumulative.append(acc)
    start = max(n_layer - gpu_layers, 0)
    active = min(gpu_layers, n_layer + 1)
    devices: list[int | None] = []
    for il in range(n_layer + 1):
        if n_dev == 0 or il < start or il - start >= active:
            devices.append(None)
        else:
            devices.append(min(bisect.bisect_right(cumulative, (il - start) / active), n_dev - 1))
    return devices


def estimate_vram(
    meta: GgufMetadata,
    gpu_layers: int,
    ctx: int,
    parallel: int = 1,
    batch_size: int = 512,
    split: Sequence[float] = (1.0,),
    flash_attn: bool = True,
    overhead: int = CUDA_OVERHEAD_BYTES,
) -> VramEstimate:
    """VRAM per GPU for this configuration; ``ctx`` is per slot, as ``koboldtui serve --ctx``."""
    n_dev = len(split)
    layers = effective_gpu_layers(meta, gpu_layers)
    devices = _layer_devices(meta.block_count, layers, split)
    weights = [0] * n_dev
    kv = [0] * n_dev
    kv_per_layer = meta.kv_bytes_per_token_per_layer() * ctx * parallel  # one stream per slot
    for il, dev in enumerate(devices[:-1]):
        if dev is not None:
            weights[dev] += meta.layer_bytes[il] if il < len(meta.layer_bytes) else 0
            kv[dev] += kv_per_layer
    output_dev = devices[-1]
    if output_dev is not None:
        weights[output_dev] += meta.output_bytes
    n_ubatch = max(1, min(batch_size, MAX_UBATCH, ctx * parallel))
    n_embd = meta.embedding_length or 0
    n_ff = meta.feed_forward_length or 4 * n_embd
    n_head = meta.head_count or 0
    head_dim = meta.head_dim_k or 0
    activations = n_ubatch * (4 * n_embd + 2 * n_ff) * 4
    attention = n_ubatch * n_head * head_dim * 4 * 2 if flash_attn else n_ubatch * ctx * n_head * 4
    used = {d for d in devices if d is not None}
    compute = [0] * n_dev
    for dev in range(n_dev):
        if dev in used or dev == 0:
            compute[dev] = activations + attention
    if output_dev is not None and meta.vocab_size:
        # The engine caps n_outputs_max at one logit row per slot (engine/native.py).
        compute[output_dev] += min(n_ubatch, parallel) * meta.vocab_size * 4
    overheads = [overhead] * n_dev
    return VramEstimate(layers, tuple(weights), tuple(kv), tuple(compute), tuple(overheads))


@dataclass(frozen=True)
class FitCheck:
    """The verdict shown before start: does it fit, what to change if not."""

    fits: bool
    checked: bool  # False when free VRAM could not be read (nothing was compared)
    estimate: VramEstimate | None
    free: tuple[int | None, ...]
    max_gpu_layers: int | None  # the largest --gpu-layers that fits (None: not even 0)
    message: str


def _split_of(gpus: Sequence[PlannedGpu], tensor_split: str | None) -> list[float]:
    if tensor_split:
        try:
            values = [float(v) for v in tensor_split.split(",")]
            if len(values) == len(gpus) and all(v >= 0 for v in values) and sum(values) > 0:
                return values
        except ValueError:
            pass
    return [1.0] * len(gpus)


def check_fit(
    meta: GgufMetadata,
    gpus: Sequence[PlannedGpu],
    gpu_layers: int,
    ctx: int,
    parallel: int = 1,
    batch_size: int = 512,
    tensor_split: str | None = None,
    flash_attn: bool = True,
) -> FitCheck:
    """Compare the estimate with the live free VRAM of ``gpus`` (CUDA order) and say what to do."""
    if not gpus:
        return FitCheck(True, False, None, (), None, "runs on the CPU: no VRAM needed")
    split = _split_of(gpus, tensor_split)
    free = tuple(g.memory_free for g in gpus)
    estimate = estimate_vram(meta, gpu_layers, ctx, parallel, batch_size, split, flash_attn)
    if any(f is None for f in free):
        return FitCheck(
            True,
            False,
            estimate,
            free,
            None,
            f"needs ~{gib(estimate.total)} of VRAM; free VRAM could not be read, so it was not checked",
        )

    def fits(layers: int) -> bool:
        need = estimate_vram(meta, layers, ctx, parallel, batch_size, split, flash_attn).per_gpu
        return all(n <= f for n, f in zip(need, free) if f is not None)

    best: int | None = None
    for layers in range(effective_gpu_layers(meta, -1), -1, -1):
        if fits(layers):
            best = layers
            break
    if all(n <= f for n, f in zip(estimate.per_gpu, free) if f is not None):
        return FitCheck(
            True,
            True,
            estimate,
            free,
            best,
            f"fits: needs ~{gib(estimate.total)}, "
            + ", ".join(f"{_name(g)} has {gib(f or 0)} free" for g, f in zip(gpus, free)),
        )
    worst = max(range(len(gpus)), key=lambda i: estimate.per_gpu[i] - (free[i] or 0))
    where = (
        f"needs ~{gib(estimate.total)}, {_name(gpus[0])} has {gib(free[0] or 0)} free"
        if len(gpus) == 1
        else f"needs ~{gib(estimate.per_gpu[worst])} on {_name(gpus[worst])}, which has {gib(free[worst] or 0)} free"
    )
    if best is not None and best > 0:
        advice = f"lower --gpu-layers to {best} or pick another GPU"
    elif best == 0:
        advice = (
            "only --gpu-layers 0 fits: pick another GPU, free some VRAM, or run on the CPU (--cpu)"
        )
    else:
        advice = (
            "it does not fit even with --gpu-layers 0: free some VRAM, lower --ctx/--parallel/--batch-size, "
            "pick another GPU, or run on the CPU (--cpu)"
        )
    return FitCheck(False, True, estimate, free, best, f"{where}: {advice}")


def _name(gpu: PlannedGpu) -> str:
    return f"GPU {gpu.index}" if gpu.index is not None else f"GPU {gpu.uuid}"


class VramFitError(ValueError):
    """Raised by ``check_spec_fit`` when an instance will not fit; the message says what to change."""

    def __init__(self, check: FitCheck) -> None:
        super().__init__(check.message)
        self.check = check


def check_plan_fit(
    model_path: str | Path,
    plan: GpuPlan,
    gpu_layers: int,
    ctx: int,
    parallel: int = 1,
    batch_size: int = 512,
) -> FitCheck:
    """The fit verdict for a model file on a GPU plan (the supervisor and the panel call this)."""
    if plan.cpu_only or gpu_layers == 0:
        return FitCheck(True, False, None, (), None, "runs on the CPU: no VRAM needed")
    meta = read_metadata(model_path)
    return check_fit(meta, plan.gpus, gpu_layers, ctx, parallel, batch_size, plan.tensor_split)


def check_spec_fit(spec: Any, plan: GpuPlan, model_path: str | Path) -> FitCheck:
    """For the supervisor: raise ``VramFitError`` if ``spec`` (gpu_layers, ctx, parallel, batch_size) will not fit.

    ``spec`` is duck-typed so gpu/ need not import control/. Returns the check when it fits.
    """
    check = check_plan_fit(
        model_path,
        plan,
        int(spec.gpu_layers),
        int(spec.ctx),
        int(spec.parallel),
        int(spec.batch_size),
    )
    if not check.fits:
        raise VramFitError(check)
    return check

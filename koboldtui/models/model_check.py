"""Can this GGUF file be served as a model? Asked before anything is stopped for it.

A model switch stops the running instance; a file that cannot load would leave it
crash-looping. So the switch (panel, CLI, gateway) first reads the file's header: it must
be a readable GGUF, hold weights (a vocab-only GGUF from llama.cpp's tests has a tokenizer
and no tensors), and its weights must fit in the machine's RAM when it runs on the CPU.
The GPU fit is the supervisor's own check (control/gpu_plan.py), asked by the caller.
"""

from __future__ import annotations

from pathlib import Path

from koboldtui.models.metadata import GgufError, GgufMetadata, read_metadata

# weights above this share of the machine's RAM make an instance page itself to a halt
RAM_SHARE = 0.9


def weights_problem(meta: GgufMetadata) -> str | None:
    """Why a readable GGUF holds no model (no tensors / no weight bytes), or None."""
    if meta.tensor_count == 0 or meta.total_tensor_bytes == 0:
        return ("a vocab-only GGUF: it holds a tokenizer but no weights (0 tensors), "
                "so it cannot be served; pick the model file itself")
    return None


def read_model(path: str | Path) -> tuple[GgufMetadata | None, str | None]:
    """(its metadata, None) for a servable GGUF, else (metadata or None, why not)."""
    try:
        meta = read_metadata(path)
    except (GgufError, OSError, ValueError) as exc:
        return None, f"cannot read it: {exc}"
    return meta, weights_problem(meta)


def ram_problem(meta: GgufMetadata, ram_bytes: int | None) -> str | None:
    """Why the weights will not fit in ``ram_bytes`` of memory (CPU mode), or None (fits or unknown)."""
    if not ram_bytes:
        return None
    need = meta.total_tensor_bytes
    if need > RAM_SHARE * ram_bytes:
        return (f"its weights need {need / 2**30:.1f} GiB and this machine has {ram_bytes / 2**30:.1f} GiB "
                "of RAM: pick a smaller quantisation or another machine")
    return None


def model_problem(path: str | Path, *, cpu_only: bool = False, ram_bytes: int | None = None) -> str | None:
    """Every check a switch makes on the file itself (readable, has weights, fits the RAM on CPU), or None."""
    meta, problem = read_model(path)
    if problem or meta is None:
        return problem
    return ram_problem(meta, ram_bytes) if cpu_only else None

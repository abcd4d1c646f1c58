"""Build the engine from a ServeConfig: the one place that maps CLI settings to EngineConfig."""

from __future__ import annotations

import threading
from pathlib import Path

from koboldtui.config import ServeConfig
from koboldtui.engine.batch_plan import BatchPlan


def parse_tensor_split(value: str | None) -> tuple[float, ...] | None:
    """'3,1' → (3.0, 1.0); raises ValueError with a hint on bad input."""
    if not value:
        return None
    try:
        parts = tuple(float(p) for p in value.replace("/", ",").split(",") if p.strip())
    except ValueError:
        raise ValueError(f"--tensor-split {value!r} must be numbers separated by commas, e.g. 3,1") from None
    if not parts or any(p < 0 for p in parts):
        raise ValueError(f"--tensor-split {value!r} must be non-negative numbers, e.g. 3,1")
    return parts


def build_engine(config: ServeConfig, model_path: Path, cancel: threading.Event | None = None):
    """Load the model and start the decode thread (blocking: run it off the event loop).

    Setting ``cancel`` abandons the load (ModelLoadCancelled). Returns a LlamaEngine.
    """
    from koboldtui.engine.llama_engine import EngineConfig, LlamaEngine

    return LlamaEngine(
        EngineConfig(
            model_path=model_path,
            ctx=config.ctx,
            parallel=config.parallel,
            batch=BatchPlan(config.batch_size),
            threads=config.effective_threads(),
            gpu_layers=config.gpu_layers,
            main_gpu=config.main_gpu,
            tensor_split=parse_tensor_split(config.tensor_split),
            max_queue=config.max_queue,
            preempt=config.horde.preempt,
            cancel_load=cancel,
        )
    )

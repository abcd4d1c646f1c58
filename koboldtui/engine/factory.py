"""Build the engine from a ServeConfig: the one place that maps CLI settings to EngineConfig."""

from __future__ import annotations

import threading
from pathlib import Path

from koboldtui.config import ServeConfig, parse_tensor_split
from koboldtui.engine.batch_plan import BatchPlan


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

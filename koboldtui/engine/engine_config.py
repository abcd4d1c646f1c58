"""What one engine is built with, and how its decode thread runs next to the HTTP loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from koboldtui.engine.batch_plan import BatchPlan


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    ctx: int = 4096  # per request (each slot gets this much KV)
    parallel: int = 4
    batch: BatchPlan = field(default_factory=BatchPlan)
    threads: int = 2
    gpu_layers: int = 0
    main_gpu: int = 0
    tensor_split: tuple[float, ...] | None = None
    max_queue: int = 64
    preempt: bool = False
    cancel_load: threading.Event | None = None  # set it to abandon a load in progress
    # Sliding-window models (Gemma 2/3): llama.cpp keeps only the window (+ a micro-batch) of
    # those layers, as llama-server does: less memory and faster steps, but their KV can be
    # shifted only when --ctx fits in that window cache. KOBOLDTUI_SWA_FULL=1 keeps full-size
    # window caches (KoboldCpp's default): context shift at any --ctx, at a cost (README).
    swa_full: bool = field(default_factory=lambda: os.environ.get("KOBOLDTUI_SWA_FULL") == "1")
    # One KV buffer shared by every slot (True) or one stream per slot (False); None: the
    # engine picks (native.choose_kv_layout). KOBOLDTUI_KV_UNIFIED=0|1 forces it.
    kv_unified: bool | None = field(
        default_factory=lambda: {"0": False, "1": True}.get(os.environ.get("KOBOLDTUI_KV_UNIFIED", "")))


DECODE_NICE = 5


def not_set(event: threading.Event | None) -> Callable[[], bool] | None:
    """``lambda: not event.is_set()``, or None when there is no event to watch."""
    if event is None:
        return None
    return lambda: not event.is_set()


def lower_decode_priority() -> None:
    """Run the decode thread (and the llama.cpp worker threads it starts) at a lower CPU
    priority than the HTTP event loop: with every core busy decoding, a new request is
    still parsed and answered at once. It costs nothing when the CPU is otherwise idle.
    Linux applies nice per thread; elsewhere this is a no-op."""
    if os.environ.get("KOBOLDTUI_DECODE_NICE") == "0" or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICE)
    except OSError:
        pass

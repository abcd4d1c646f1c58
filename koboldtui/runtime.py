"""Runtime: one instance's engine, local-priority gate and Horde worker, as a plain library.

``koboldtui serve`` and the tests build it in-process; the panel runs it as a child
process. Every local (non-Horde) request goes through ``submit`` so it stamps the gate
when it arrives and when it ends, whatever API route it came by.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from koboldtui import __version__
from koboldtui.config import ServeConfig
from koboldtui.engine.interface import GenerationHandle, TextEngine
from koboldtui.engine.types import EngineError, GenerationRequest, GenerationResult, Origin
from koboldtui.horde.priority import LocalPriorityGate
from koboldtui.status import InstanceInfo, InstanceStatus

log = logging.getLogger(__name__)


RECENT_HANDLES = 256


class NotReadyError(EngineError):
    status = 503


class Runtime:
    """Holds what one instance is made of; the HTTP app reads and drives it."""

    def __init__(self, config: ServeConfig, model_path: Path, *,
                 engine_factory: Callable[[ServeConfig, Path], TextEngine] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.model_path = model_path
        self.gate = LocalPriorityGate(config.horde.window_s, clock=clock)
        self.engine: TextEngine | None = None
        self.horde_worker: Any = None
        self.state = "loading"
        self.load_error: str | None = None
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self.last_result: GenerationResult | None = None
        self.total_local = 0
        self._engine_factory = engine_factory
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancel_load = threading.Event()
        self._load_task: asyncio.Task[None] | None = None
        # genkey → handle of recent requests, for /api/extra/generate/check and abort.
        self.recent_handles: collections.OrderedDict[str, GenerationHandle] = collections.OrderedDict()
        self.latest_local_handle: GenerationHandle | None = None

    # ------------------------------------------------------------------ life cycle
    def start_loading(self) -> asyncio.Task[None]:
        """Load in the background (the port is already open: /health says "loading")."""
        if self._load_task is None:
            self._load_task = asyncio.get_running_loop().create_task(self._load_quietly())
        return self._load_task

    async def _load_quietly(self) -> None:
        with contextlib.suppress(Exception):  # reported by /health, the status and the log
            await self.load()

    async def load(self) -> None:
        """Load the model off the event loop, then start the Horde worker if configured."""
        factory = self._engine_factory
        if factory is None:
            from koboldtui.engine.factory import build_engine

            def factory(config: ServeConfig, path: Path) -> TextEngine:
                return build_engine(config, path, cancel=self._cancel_load)
        try:
            engine = await asyncio.to_thread(factory, self.config, self.model_path)
        except Exception as exc:
            if self._cancel_load.is_set():
                log.info("model load cancelled: the instance is stopping")
                return
            self.state = "failed"
            self.load_error = str(exc)
            log.error("model load failed: %s", exc)
            raise
        if self._cancel_load.is_set():  # stopped while the last load step ran
            await asyncio.to_thread(engine.close)
            return
        self.engine = engine
        self.state = "ready"
        if self.config.horde.enabled:
            self.horde_worker = self._make_horde_worker()
            await self.horde_worker.start()

    def _make_horde_worker(self) -> Any:
        from koboldtui.horde.worker import HordeWorker

        engine = self.require_engine()
        return HordeWorker(
            engine, self.gate, self.config.horde, n_ctx_per_seq=engine.n_ctx_per_seq,
            parallel=engine.parallel, model_path=str(self.model_path),
        )

    async def shutdown(self, force_horde: bool = False) -> None:
        """Stop the Horde worker (finishing jobs unless forced), abort the rest, free the model."""
        self.state = "stopping"
        self._cancel_load.set()
        if self._load_task is not None and not self._load_task.done():
            await asyncio.shield(self._load_task)  # a cancelled load ends within a moment
        if self.horde_worker is not None:
            try:
                await asyncio.wait_for(self.horde_worker.stop(force=force_horde), timeout=30)
            except asyncio.TimeoutError:  # jobs still in hand go back as faulted, not stale
                log.warning("Horde jobs did not finish within 30 s: submitting them as faulted")
                await self.horde_worker.stop(force=True)
            except Exception:
                log.exception("Horde worker did not stop cleanly")
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.close)

    # ------------------------------------------------------------------ requests
    def require_engine(self) -> TextEngine:
        if self.engine is None:
            if self.state == "failed":
                raise NotReadyError(f"the model failed to load: {self.load_error}")
            if self.state == "stopping":
                raise NotReadyError("the instance is shutting down")
            raise NotReadyError("the model is still loading: retry in a few seconds")
        return self.engine

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request; local ones shut the Horde's window until ``window_s`` after they end."""
        engine = self.require_engine()
        local = request.origin is Origin.LOCAL
        if local:
            self.gate.local_started()
        try:
            handle = engine.submit(request)
        except Exception:
            if local:
                self.gate.local_finished()
            raise
        if local:
            self.total_local += 1
            self.latest_local_handle = handle
        self.recent_handles[handle.genkey] = handle
        while len(self.recent_handles) > RECENT_HANDLES:
            self.recent_handles.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._track(handle, local))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    async def _track(self, handle: GenerationHandle, local: bool) -> None:
        try:
            self.last_result = await handle.result()
        finally:
            if local:
                self.gate.local_finished()

    # ------------------------------------------------------------------ status
    def horde_status(self) -> dict[str, Any]:
        if self.horde_worker is not None:
            return self.horde_worker.status()
        from koboldtui.horde.stats import off_status

        return off_status(self.gate.window_s, self.gate.remaining())

    def instance_info(self) -> InstanceInfo:
        cfg = self.config
        return InstanceInfo(
            name=cfg.name, version=__version__, pid=os.getpid(), host=cfg.host, port=cfg.port,
            launch_token=cfg.launch_token, started_at=self.started_at,
            uptime_s=round(time.monotonic() - self._t0, 1), state=self.state,
            threads=cfg.effective_threads(), gpu_layers=cfg.gpu_layers,
            cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        )

    def status(self) -> InstanceStatus:
        engine = self.require_engine()
        return InstanceStatus(instance=self.instance_info(), engine=engine.snapshot(),
                              horde=self.horde_status())

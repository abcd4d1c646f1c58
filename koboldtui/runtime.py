"""Runtime: one instance's engine, local-priority gate and Horde worker, as a plain library.

``koboldtui serve`` and the tests build it in-process; the panel runs it as a child
process. Every local (non-Horde) request goes through ``submit`` so it stamps the gate
when it arrives and when it ends, whatever API route it came by.

Stopping drains (phases and times in ``stop_budget``): ``begin_stop`` at the first signal
refuses new requests and stops Horde pops; requests in flight finish or are aborted
(finish reason ``abort``) after the drain window; ``shutdown`` lets the Horde jobs in hand
finish and be submitted, faults what is left, and frees the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from koboldtui import __version__, stop_budget
from koboldtui.config import ServeConfig
from koboldtui.engine.interface import GenerationHandle, TextEngine
from koboldtui.engine.types import EngineError, GenerationRequest, GenerationResult, Origin
from koboldtui.horde.priority import LocalPriorityGate
from koboldtui.queue_wait import limit_queue_wait
from koboldtui.request_book import RequestBook, Requester
from koboldtui.status import InstanceInfo, InstanceStatus

log = logging.getLogger(__name__)


# one decode step running longer than this means llama.cpp is stuck (a big prompt chunk
# on a slow CPU takes tens of seconds; a hang never ends): /health then says "wedged"
WEDGED_AFTER_S = 120.0


class NotReadyError(EngineError):
    status = 503


class Runtime:
    """Holds what one instance is made of; the HTTP app reads and drives it."""

    def __init__(self, config: ServeConfig, model_path: Path, *,
                 engine_factory: Callable[[ServeConfig, Path], TextEngine] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wedged_after_s: float = WEDGED_AFTER_S) -> None:
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
        # local requests by who sent them (address + genkey), for /api/extra/generate/check and abort
        self.requests = RequestBook()
        self.wedged_after_s = wedged_after_s
        self._local_in_flight: set[GenerationHandle] = set()
        self.stop_began_at: float | None = None  # clock time of the first stop signal
        self._drain_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Future[None] | None = None

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
        from koboldtui.horde.journal import JobJournal
        from koboldtui.horde.worker import HordeWorker
        from koboldtui.paths import app_paths

        engine = self.require_engine()
        journal = JobJournal(app_paths().data_dir / "run" / f"{self.config.name}.horde-jobs.json")
        return HordeWorker(
            engine, self.gate, self.config.horde, n_ctx_per_seq=engine.n_ctx_per_seq,
            parallel=engine.parallel, model_path=str(self.model_path), journal=journal,
        )

    @property
    def stopping(self) -> bool:
        """True from the first stop signal on: new requests are refused, the rest drain."""
        return self.stop_began_at is not None

    def begin_stop(self, drain_s: float | None = None) -> None:
        """The first stop signal: refuse new requests, stop Horde pops, drain the rest.

        Local requests in flight may finish for ``drain_s``; then they are aborted, so
        every client gets a finish reason. Called again, it hurries (``hurry``).
        """
        if self.stopping:
            self.hurry()
            return
        self.stop_began_at = time.monotonic()  # real time: the budget is real seconds
        self.state = "stopping"
        self._cancel_load.set()
        loop = asyncio.get_running_loop()
        if self.horde_worker is not None:  # no new pops from now; jobs in hand go on
            self._keep(loop.create_task(self.horde_worker.stop(force=False, wait=False)))
        window = self.config.drain_s if drain_s is None else drain_s
        log.info("stopping: %d local request(s) in flight get %.0f s to finish",
                 len(self._local_in_flight), window)
        self._drain_task = loop.create_task(self._drain_local(window))
        self._keep(self._drain_task)

    def hurry(self) -> None:
        """A second stop signal: abort local requests now and fault Horde jobs now (still submitted)."""
        log.info("stopping now: aborting %d local request(s), faulting Horde jobs in hand",
                 len(self._local_in_flight))
        self._abort_local()
        if self.horde_worker is not None:
            self._keep(asyncio.get_running_loop().create_task(
                self.horde_worker.stop(force=True, wait=False)))

    async def _drain_local(self, window_s: float) -> None:
        deadline = time.monotonic() + window_s
        while self._local_in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._local_in_flight:
            log.info("drain window over: aborting %d local request(s)", len(self._local_in_flight))
            self._abort_local()

    def _abort_local(self) -> None:
        for handle in list(self._local_in_flight):
            handle.abort()  # ends with finish reason "abort" at the next decode step

    async def wait_drained(self) -> None:
        """Wait until the local drain is over (every local request has ended)."""
        if self._drain_task is not None:
            await asyncio.shield(self._drain_task)
        while self._local_in_flight:
            await asyncio.sleep(0.05)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self, force_horde: bool = False) -> None:
        """Drain (if no signal began it), let Horde jobs finish or fault them, free the model.

        Runs once: ``koboldtui serve`` calls it while the port is still open (new requests get
        503, not "connection refused"), the app's lifespan again after; both wait for the same."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self._shutdown(force_horde))
        elif force_horde:
            self.hurry()
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, force_horde: bool) -> None:
        if not self.stopping:
            self.begin_stop()
        if force_horde:
            self.hurry()
        self._cancel_load.set()
        if self._load_task is not None and not self._load_task.done():
            await asyncio.shield(self._load_task)  # a cancelled load ends within a moment
        if self.horde_worker is not None:
            await self._stop_horde()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wait_drained(), timeout=stop_budget.ABORT_S)
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.close)

    async def _stop_horde(self) -> None:
        """Jobs in hand finish until HORDE_FINISH_S after the signal, then go back faulted."""
        worker = self.horde_worker
        assert self.stop_began_at is not None
        left = stop_budget.HORDE_FINISH_S - (time.monotonic() - self.stop_began_at)
        try:
            await asyncio.wait_for(worker.stop(force=False), timeout=max(0.1, left))
            return
        except asyncio.TimeoutError:  # jobs still in hand go back as faulted, not stale
            log.warning("Horde jobs did not finish within %.0f s of the stop: submitting them as "
                        "faulted", stop_budget.HORDE_FINISH_S)
        except Exception:
            log.exception("Horde worker did not stop cleanly")
        try:
            await asyncio.wait_for(worker.stop(force=True), timeout=stop_budget.HORDE_FAULT_S)
        except asyncio.TimeoutError:
            log.error("Horde jobs could not be faulted within %.0f s: the Horde will time them out",
                      stop_budget.HORDE_FAULT_S)
        except Exception:
            log.exception("Horde worker did not stop cleanly")

    # ------------------------------------------------------------------ requests
    def require_engine(self) -> TextEngine:
        if self.engine is None:
            if self.state == "failed":
                raise NotReadyError(f"the model failed to load: {self.load_error}")
            if self.state == "stopping":
                raise NotReadyError("the instance is shutting down")
            raise NotReadyError("the model is still loading: retry in a few seconds")
        return self.engine

    async def submit(self, request: GenerationRequest, requester: Requester | None = None) -> GenerationHandle:
        """Queue a request; local ones shut the Horde's window until ``window_s`` after they end.

        The prompt is tokenized in a worker thread (``engine.submit_async``): the event loop
        keeps answering /health and other clients meanwhile. ``requester`` (the client's
        address and genkey) is what ``/api/extra/abort`` and ``generate/check`` select by."""
        return (await self.submit_many([request], requester))[0]

    async def submit_many(self, requests: list[GenerationRequest],
                          requester: Requester | None = None) -> list[GenerationHandle]:
        """Queue requests with one prompt as one unit (OpenAI ``n`` choices: the engine feeds
        the prompt once and shares its KV); all are queued or none. One request is a plain
        ``submit``."""
        self._refuse_if_stopping()
        engine = self.require_engine()
        local = [request.origin is Origin.LOCAL for request in requests]
        for is_local in local:
            if is_local:
                self.gate.local_started()
        try:
            if len(requests) == 1:
                handles = [await engine.submit_async(requests[0])]
            else:
                handles = list(await engine.submit_many_async(requests))
            if self.stopping:  # the stop signal came while the prompt was tokenized
                for handle in handles:
                    handle.abort()
                self._refuse_if_stopping()
        except BaseException:  # an EngineError, or the client went away while it was tokenized
            for is_local in local:
                if is_local:
                    self.gate.local_finished()
            raise
        return [self._track_new(engine, handle, is_local, requester)
                for handle, is_local in zip(handles, local, strict=True)]

    def _track_new(self, engine: TextEngine, handle: GenerationHandle, local: bool,
                   requester: Requester | None) -> GenerationHandle:
        """Count a queued request, limit a local one's queue wait, and release the Horde gate
        when it ends; returns the handle the caller reads."""
        tracked = handle
        if local:
            self.total_local += 1
            self._local_in_flight.add(handle)
            handle = limit_queue_wait(engine, handle, self.config.queue_timeout_s)
            if requester is not None:
                self.requests.add(requester, handle)
        task = asyncio.get_running_loop().create_task(self._track(tracked, local))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return handle

    def _refuse_if_stopping(self) -> None:
        if self.stopping:
            raise NotReadyError("the instance is shutting down: send the request to it again "
                                "once it has restarted")

    async def _track(self, handle: GenerationHandle, local: bool) -> None:
        try:
            self.last_result = await handle.result()
        finally:
            self._local_in_flight.discard(handle)
            if local:
                self.gate.local_finished()

    # ------------------------------------------------------------------ status
    def health(self) -> tuple[dict[str, Any], int]:
        """``/health`` as (body, HTTP status): 200 only while ready AND the decode thread beats.

        A decode thread that died, or one step that has run past ``wedged_after_s``, is
        "wedged" (503): the supervisor's watchdog then restarts the instance.
        """
        if self.state != "ready":
            body: dict[str, Any] = {"status": self.state}
            if self.load_error:
                body["error"] = self.load_error
            return body, 503
        heartbeat = getattr(self.engine, "decode_heartbeat", None)
        alive, step_s = heartbeat() if heartbeat is not None else (True, 0.0)
        if not alive:
            return {"status": "wedged", "error": "the decode thread has died: restart the instance "
                    "(see its log)"}, 503
        if step_s > self.wedged_after_s:
            return {"status": "wedged", "decode_step_s": round(step_s, 1),
                    "error": f"one decode step has run for {step_s:.0f} s (llama.cpp is stuck): "
                    "restart the instance"}, 503
        return {"status": "ok"}, 200  # the body KoboldCpp-style clients expect

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

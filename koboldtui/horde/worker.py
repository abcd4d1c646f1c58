"""The AI Horde worker: lends idle slots to the Horde and gets out of the way of local users.

One asyncio task pops jobs (only while the ``LocalPriorityGate`` is open and fewer than
``threads`` jobs are in hand); each job runs as its own task through the engine at
Horde priority and is submitted ``ok`` or ``faulted``. Errors follow HORDE.md's rc table
(see ``errors.py``); a fatal one stops the worker with words that say what to do while
the instance keeps serving local clients. Clock, sleep and randomness are injected so
the window, backoffs and pacing are tested without waiting.

Threads: every spare slot by default (``parallel - 1``; ``settings.threads`` caps it), so
one slot always stays free for local users. With ``parallel == 1`` there is no slot to
spare: the worker gets one thread only when ``settings.preempt`` lets a local request
preempt the Horde sequence, otherwise it refuses to start and says how to fix it. The
advertised ``max_length`` is sized by the speed one job gets with every thread busy.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from koboldtui.config import HordeSettings
from koboldtui.engine.interface import TextEngine
from koboldtui.horde.backoff import Backoff, EmptyPopPacer, wait_or_event
from koboldtui.horde.client import HordeClient, default_agent
from koboldtui.horde.errors import Action, HordeError, bug_report
from koboldtui.horde.jobs import HordeJobs, Sleep, horde_threads
from koboldtui.horde.journal import JobJournal
from koboldtui.horde.payload import (
    HordeJob,
    WorkerLimits,
    default_model_name,
    honest_limits,
    pop_body,
)
from koboldtui.horde.priority import LocalPriorityGate
from koboldtui.horde.stats import HordeStats

log = logging.getLogger(__name__)

MAINTENANCE_POLL_S = 60.0  # "keep polling slowly": still well inside the 5-minute online window
PAUSED_POLL_S = 1.0  # how often the loop looks at the gate while a local request holds it
SLOW_RETRY_FLOOR_S = 60.0  # TooManyNewIPs / TimeoutIP


class HordeWorkerStateError(RuntimeError):
    """A control request (start/maintenance) that does not fit the worker's state right now."""


class HordeWorker:
    """Pops, runs and submits Horde jobs on the instance's event loop; see ``status()``."""

    def __init__(
        self,
        engine: TextEngine,
        gate: LocalPriorityGate,
        settings: HordeSettings,
        *,
        n_ctx_per_seq: int,
        parallel: int,
        model_path: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        client: HordeClient | None = None,
        maintenance_poll_s: float = MAINTENANCE_POLL_S,
        paused_poll_s: float = PAUSED_POLL_S,
        journal: JobJournal | None = None,
    ) -> None:
        self._gate = gate
        self.settings = settings
        self.n_ctx_per_seq = n_ctx_per_seq
        self.parallel = parallel
        self.threads = horde_threads(settings.threads, parallel, settings.preempt)
        self.models = [settings.model_name or default_model_name(model_path)]
        self.bridge_agent = settings.bridge_agent or default_agent()
        self._clock = clock
        self._sleep = sleep
        self._client = client or HordeClient(  # a pasted key often brings a space or newline
            settings.api_key.strip(), settings.url, client_agent=default_agent()
        )
        self._maintenance_poll_s = maintenance_poll_s
        self._paused_poll_s = paused_poll_s
        self._backoff = Backoff(rng=rng)
        self._pacer = EmptyPopPacer()
        self.stats = HordeStats()
        self.worker_id: str | None = None
        self.maintenance_message: str | None = None
        self._phase = "off"
        self._fatal: str | None = None
        self._in_maintenance = False
        self._backoff_until: float | None = None
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._stop_requested = False
        self._jobs = HordeJobs(
            engine,
            self._client,
            self.stats,
            limits=self.limits,
            fail=self._fail,
            on_done=self._poke,
            clock=clock,
            sleep=sleep,
            rng=rng,
            journal=journal,
            threads=self.threads,
        )
        self._loop_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # ----------------------------------------------------------------- control

    async def start(self) -> None:
        """Start popping (again); a no-op while running. Fatal errors from before are cleared."""
        if self._loop_task is not None and not self._loop_task.done():
            return
        if self._stop_task is not None and not self._stop_task.done():
            raise HordeWorkerStateError(
                f"the Horde worker is still finishing {len(self._jobs)} job(s) from the last stop: "
                "wait for it, or stop it with force first"
            )
        self._wake = asyncio.Event()
        self._jobs.reset()
        self._stop_task = None
        self._fatal = None
        self.stats.clear_error("fatal")
        self._stop_requested = False
        self._backoff.reset()
        self._pacer.reset()
        self._started_at, self._stopped_at = self._clock(), None
        if self.threads < 1:
            self._fail(
                "the Horde worker has no slot to use: --parallel 1 keeps its only slot for local "
                "users; raise --parallel to 2 or more, or pass --horde-preempt"
            )
            return
        self._phase = "starting"
        self._jobs.hand_back_leftovers()  # jobs a killed predecessor held: faulted, at once
        log.info(
            "Horde worker %r starting: models=%s threads=%d",
            self.settings.worker_name,
            self.models,
            self.threads,
        )
        self._loop_task = asyncio.create_task(self._run(), name="horde-worker")

    async def stop(self, force: bool = False, wait: bool = True) -> dict[str, Any]:
        """Stop popping; finish the jobs in hand (graceful) or submit them faulted (force).

        Returns how many jobs were in hand and an ETA; with ``wait`` it returns once all
        of them are submitted (or dropped) and the worker is stopped.
        """
        in_hand, eta = len(self._jobs), self._jobs.eta_s()
        if self._loop_task is None and self._stop_task is None:
            return {"jobs_in_progress": 0, "eta_s": 0.0, "forced": force}
        first = not self._stop_requested
        hurried = force and not self._jobs.forced
        self._stop_requested = True
        if force:
            self._jobs.force()
        self._poke()
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._finish_stop(), name="horde-worker-stop")
        if in_hand and (first or hurried):  # one line per stop, one more if it turns forced
            log.info(
                "Horde worker stopping: %d job(s) in hand%s",
                in_hand,
                " (faulting them)" if force else "",
            )
        if wait:
            await asyncio.shield(self._stop_task)
        return {"jobs_in_progress": in_hand, "eta_s": 0.0 if force else eta, "forced": force}

    async def wait_stopped(self) -> None:
        """Wait until a requested stop has finished every job in hand."""
        if self._stop_task is not None:
            await asyncio.shield(self._stop_task)

    async def set_maintenance(self, on: bool, message: str = "") -> None:
        """Put this worker in or out of maintenance on the Horde (PUT /v2/workers/{id}).

        Raises HordeError when the Horde refuses, HordeWorkerStateError when the Horde
        does not know the worker yet (it registers on its first pop).
        """
        worker_id = self.worker_id or await self._lookup_worker_id()
        if worker_id is None:
            raise HordeWorkerStateError(
                f"the Horde does not know a worker named {self.settings.worker_name!r} yet: it "
                "registers on its first pop, so start the worker first"
            )
        await self._client.set_maintenance(worker_id, on, message)
        log.info("Horde worker maintenance switched %s from koboldtui%s", "on" if on else "off",
                 f": {message}" if on and message else "")
        self._in_maintenance = on
        self.maintenance_message = (message or "maintenance set from koboldtui") if on else None
        if not on:
            self.stats.clear_error("maintenance")
            if self._phase == "maintenance":
                self._phase = "idle"  # the next pop says what comes next
            self._pacer.reset()
            self._poke()

    # ------------------------------------------------------------------ status

    @property
    def state(self) -> str:
        """One of HORDE_STATES (stats.py), as the status and the panel show it."""
        if self._stop_requested:
            return "stopping" if (self._stop_task and not self._stop_task.done()) else "stopped"
        if self._fatal is not None:
            return "error"
        if self._phase in ("off", "stopped"):
            return self._phase
        if self._jobs.all_retrying():
            return "backoff"  # results in hand, the Horde is not taking them: retrying
        if self._gate.remaining() > 0 and not self._in_maintenance:
            return "paused_local"  # no pops during the local window, even with a job in hand
        if self._jobs:
            return "generating"
        if self._in_maintenance:
            return "maintenance"
        return self._phase

    def limits(self) -> WorkerLimits:
        """What the next pop advertises (shrinks once Horde jobs turn out slow)."""
        return honest_limits(
            self.n_ctx_per_seq, self.settings.max_length, self.stats.full_load_tokens_per_s or None
        )

    def status(self) -> dict[str, Any]:
        """The ``horde`` object of GET /api/koboldtui/status (keys: stats.py and the README)."""
        now = self._clock()
        limits = self.limits()
        uptime = 0.0
        if self._started_at is not None:
            uptime = (self._stopped_at if self._stopped_at is not None else now) - self._started_at
        return {
            "state": self.state,
            "window_s": self._gate.window_s,
            "remaining_s": round(self._gate.remaining(), 1),
            **self.stats.counters(now),
            "last_error": self._fatal or self._jobs.retry_error() or self.stats.last_error,
            "worker_id": self.worker_id,
            "worker_name": self.settings.worker_name,
            "jobs_in_progress": len(self._jobs),
            "uptime_s": round(max(0.0, uptime), 1),
            "maintenance_message": self.maintenance_message if self._in_maintenance else None,
            "backoff_s": round(
                max(0.0, (self._backoff_until or now) - now, self._jobs.submit_retry_s()), 1
            ),
            "stop_eta_s": self._jobs.eta_s() if self._stop_requested and self._jobs else None,
            "threads": self.threads,
            "models": list(self.models),
            "max_length": limits.max_length,
            "max_context_length": limits.max_context_length,
            "bridge_agent": self.bridge_agent,
        }

    # -------------------------------------------------------------- the loop

    async def _run(self) -> None:
        try:
            while not self._stop_requested and self._fatal is None:
                if self.stats.user_due(self._clock()):
                    await self._refresh_user()
                    continue
                if not self._gate.horde_may_pop():
                    await self._pause(min(max(self._gate.remaining(), 0.05), self._paused_poll_s))
                elif len(self._jobs) >= self.threads:
                    await self._pause(None)  # a finishing job (or a stop) pokes us
                else:
                    await self._pop_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug of ours: say so, do not die silently
            # Only the type: an exception's text or repr could carry the API key.
            log.error("Horde worker loop failed: %s", bug_report(exc))
            self._fail(
                f"the Horde worker failed unexpectedly ({type(exc).__name__}): "
                "restart it; please report this bug"
            )

    async def _pop_once(self) -> None:
        self._phase = "popping"
        limits = self.limits()
        body = pop_body(
            name=self.settings.worker_name,
            models=self.models,
            limits=limits,
            threads=self.threads,
            bridge_agent=self.bridge_agent,
            nsfw=self.settings.nsfw,
        )
        try:
            data = await self._client.pop(body)
        except HordeError as err:
            await self._on_pop_error(err)
            return
        self.stats.pops += 1
        self._backoff.reset()
        self.stats.clear_error("pop", "maintenance")  # the Horde answers again
        if self._in_maintenance:
            log.info("Horde worker out of maintenance: the Horde gives it jobs again")
        self._in_maintenance = False
        self.stats.record_skipped(data.get("skipped") if isinstance(data, dict) else None)
        job = HordeJob.from_pop(data) if isinstance(data, dict) else None
        if job is None:
            self.stats.empty_pops += 1
            self._phase = "idle"
            if self.worker_id is None and self.stats.pops == 1:
                await self._lookup_worker_id()
            await self._pause(self._pacer.next_delay())
            return
        self._pacer.reset()
        self._jobs.launch(job)
        self._phase = "generating"
        if self.worker_id is None:
            await self._lookup_worker_id()

    async def _on_pop_error(self, err: HordeError) -> None:
        text = err.explain()
        action = err.action
        if action in (Action.STOP, Action.DROP, Action.DONE):  # DROP/DONE mean nothing for a pop
            self._fail(text)
        elif action is Action.MAINTENANCE:
            self.stats.record_error(text, self._clock(), "maintenance")
            was = self._in_maintenance
            self._in_maintenance = True
            self.maintenance_message = err.server_message or text
            await self._read_maintenance_message()
            if not was:  # switched on at the Horde (its site, another tool): say so once
                log.warning("Horde worker in maintenance: %s (polling every %.0f s)",
                            self.maintenance_message, self._maintenance_poll_s)
            self._phase = "maintenance"
            await self._pause(self._maintenance_poll_s)
        else:
            floor = SLOW_RETRY_FLOOR_S if action is Action.SLOW_RETRY else 0.0
            delay = self._backoff.next_delay(floor_s=floor)
            if err.retry_after:
                delay = max(delay, min(err.retry_after, self._backoff.cap_s))
            self.stats.record_error(text, self._clock(), "pop")
            log.warning("%s (waiting %.1f s)", text, delay)
            self._phase = "backoff"
            self._backoff_until = self._clock() + delay
            await self._pause(delay)
            self._backoff_until = None

    # ---------------------------------------------------------------- helpers

    async def _finish_stop(self) -> None:
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self._jobs.drain()
        self._stopped_at = self._clock()
        self._phase = "stopped"
        self._loop_task = None
        await self._client.aclose()
        log.info("Horde worker stopped")

    def _fail(self, text: str) -> None:
        """A fatal error: stop popping, keep the words for the status; local serving goes on."""
        self._fatal = text
        self.stats.record_error(text, self._clock(), "fatal")
        self._stopped_at = self._clock()
        self._phase = "error"
        log.error("Horde worker stopped: %s", text)
        self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _pause(self, seconds: float | None) -> None:
        """Wait ``seconds`` (None = no limit) or until poked: a job ended, a stop, maintenance."""
        await wait_or_event(seconds, self._wake, self._sleep)
        if self._wake is not None:
            self._wake.clear()

    async def _refresh_user(self) -> None:
        """Kudos total and username, at most every 60 s (find_user is cached server-side anyway)."""
        now = self._clock()
        try:
            data = await self._client.find_user()
        except HordeError as err:
            self.stats.user_refreshed_at = now  # do not hammer it either
            if err.action is Action.STOP:
                self._fail(err.explain())
            else:
                self.stats.record_error(err.explain(), now, "user")
            return
        self.stats.record_user(data if isinstance(data, dict) else {}, now)
        self.stats.clear_error("user")

    async def _lookup_worker_id(self) -> str | None:
        try:
            data = await self._client.worker_by_name(self.settings.worker_name)
        except HordeError:
            return None  # not registered yet (404), or the Horde is busy: try again later
        if isinstance(data, dict) and data.get("id"):
            self.worker_id = str(data["id"])
            if data.get("maintenance_mode") and data.get("maintenance_msg"):
                self.maintenance_message = str(data["maintenance_msg"])
        return self.worker_id

    async def _read_maintenance_message(self) -> None:
        try:
            if self.worker_id:
                data = await self._client.worker_by_id(self.worker_id)
            else:
                await self._lookup_worker_id()
                return
        except HordeError:
            return
        if isinstance(data, dict) and data.get("maintenance_msg"):
            self.maintenance_message = str(data["maintenance_msg"])

"""What happens to a popped Horde job: generate it, then submit it until its TTL runs out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from koboldtui.engine.interface import GenerationHandle, TextEngine
from koboldtui.engine.types import GenerationRequest
from koboldtui.horde.backoff import Backoff, wait_or_event
from koboldtui.horde.client import HordeClient
from koboldtui.horde.errors import bug_report
from koboldtui.horde.payload import (
    HordeJob,
    JobOutcome,
    WorkerLimits,
    run_job_generation,
    submit_margin_s,
)
from koboldtui.horde.stats import HordeStats

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]


def horde_threads(requested: int, parallel: int, preempt: bool) -> int:
    """Slots the Horde may use: at most ``parallel - 1`` (one stays free for locals); 0 = none."""
    if parallel >= 2:
        return max(1, min(int(requested), parallel - 1))
    return 1 if preempt else 0


@dataclass
class _JobInHand:
    horde_id: str
    started_at: float
    deadline: float
    max_tokens: int = 0
    handle: GenerationHandle | None = None


class HordeJobs:
    """Runs and submits the jobs a worker popped; tells it (``fail``/``on_done``) how they end."""

    def __init__(
        self,
        engine: TextEngine,
        client: HordeClient,
        stats: HordeStats,
        *,
        limits: Callable[[], WorkerLimits],
        fail: Callable[[str], None],
        on_done: Callable[[], None],
        clock: Callable[[], float],
        sleep: Sleep,
        rng: Callable[[], float],
    ) -> None:
        self._engine = engine
        self._client = client
        self._stats = stats
        self._limits = limits
        self._fail = fail
        self._on_done = on_done
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.in_hand: dict[str, _JobInHand] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._force = False
        self._forced: asyncio.Event | None = None

    def __len__(self) -> int:
        """How many jobs are in hand now."""
        return len(self.in_hand)

    def reset(self) -> None:
        """Get ready for a fresh start: no forced stop pending."""
        self._forced = asyncio.Event()
        self._force = False

    def force(self) -> None:
        """A forced stop: abort the generations in hand and submit every job faulted at once."""
        self._force = True
        if self._forced is not None:
            self._forced.set()
        for job in self.in_hand.values():
            if job.handle is not None:
                job.handle.abort()

    def launch(self, job: HordeJob) -> None:
        """Take every id of a popped job in hand and run each as its own task."""
        for index, horde_id in enumerate(job.ids):
            self.in_hand[horde_id] = _JobInHand(horde_id, self._clock(), self._clock() + job.ttl_s)
            task = asyncio.create_task(
                self._run_job(job, index, horde_id), name=f"horde-job-{horde_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every job task has ended (submitted or dropped)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def eta_s(self) -> float | None:
        """Seconds until the jobs in hand finish, from the measured speed (None = unknown yet)."""
        if not self.in_hand:
            return 0.0
        speed = self._stats.tokens_per_s
        if speed <= 0:
            return None
        now = self._clock()
        left = [
            max(0.0, job.max_tokens - (now - job.started_at) * speed) / speed
            for job in self.in_hand.values()
        ]
        return round(max(left), 1)

    async def _run_job(self, job: HordeJob, index: int, horde_id: str) -> None:
        in_hand = self.in_hand[horde_id]

        def keep_handle(request: GenerationRequest, handle: GenerationHandle) -> None:
            in_hand.max_tokens, in_hand.handle = request.max_tokens, handle

        try:
            if self._force:  # forced stop: hand it back faulted at once
                outcome = JobOutcome("", "faulted", 0)
            else:
                outcome = await run_job_generation(
                    self._engine,
                    job,
                    index,
                    self._limits(),
                    keep_handle,
                    deadline=in_hand.deadline - submit_margin_s(job.ttl_s),
                    clock=self._clock,
                )
            if outcome.error:
                self._stats.record_error(outcome.error, self._clock())
            if outcome.state == "ok" and outcome.result is not None:
                result = outcome.result
                self._stats.record_speed(result.completion_tokens, result.tokens_per_s)
            await self._submit(
                horde_id, outcome.text, outcome.state, outcome.seed, in_hand.deadline
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never let one job take the worker down
            await self._fault_after_bug(in_hand, exc)
        finally:
            self.in_hand.pop(horde_id, None)
            self._on_done()

    async def _fault_after_bug(self, in_hand: _JobInHand, exc: Exception) -> None:
        """A bug of ours hit a job: hand it back faulted (one try, with retries) or drop it."""
        log.error("Horde job %s failed: %s", in_hand.horde_id, bug_report(exc))
        if in_hand.handle is not None:
            in_hand.handle.abort()  # nobody will read it; harmless once it has ended
        self._stats.record_error(
            f"a Horde job failed unexpectedly ({type(exc).__name__}): submitted as faulted; "
            "please report this bug",
            self._clock(),
        )
        try:
            await self._submit(in_hand.horde_id, "", "faulted", 0, in_hand.deadline)
        except asyncio.CancelledError:
            raise
        except Exception as again:  # noqa: BLE001 - logged by bug_report
            log.error("Horde job %s could not be faulted: %s", in_hand.horde_id, bug_report(again))
            self._stats.jobs_dropped += 1

    async def _submit(
        self, horde_id: str, text: str, state: str, seed: int, deadline: float
    ) -> None:
        body = {"id": horde_id, "generation": text, "state": state, "seed": int(seed)}
        outcome = await self._client.submit_until(
            body,
            deadline,
            clock=self._clock,
            backoff=Backoff(rng=self._rng),
            give_up=lambda: self._force,
            wait=lambda seconds: wait_or_event(seconds, self._forced, self._sleep),
        )
        if outcome.kind == "done":
            self._stats.record_submitted(state, outcome.reward)
            return
        self._stats.jobs_dropped += 1
        if outcome.kind == "fatal":
            self._fail(outcome.error or "the Horde refused the submit")
        else:
            self._stats.record_error(outcome.error or "a Horde job was dropped", self._clock())

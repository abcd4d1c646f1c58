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
from koboldtui.horde.journal import JobJournal
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
    """Slots the Horde may use: at most ``parallel - 1`` (one stays free for locals); 0 = none.

    ``requested`` 0 (the default) means every spare slot: ``parallel - 1``."""
    if parallel >= 2:
        spare = parallel - 1
        return spare if int(requested) <= 0 else max(1, min(int(requested), spare))
    return 1 if preempt else 0


@dataclass
class _JobInHand:
    horde_id: str
    started_at: float
    deadline: float
    max_tokens: int = 0
    handle: GenerationHandle | None = None
    submitting: bool = False  # generation over, the result is on its way to the Horde
    retry_at: float | None = None  # a failed submit waits until then (clock)
    model: str = ""  # the model the pop asked for (the panel's recent jobs list shows it)
    together: int = 1  # the most Horde jobs in hand at once while this one was
    retry_words: str = ""  # why the last submit failed, while a retry waits


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
        journal: JobJournal | None = None,
        threads: int = 1,
    ) -> None:
        self._engine = engine
        self._threads = max(1, threads)
        self._journal = journal or JobJournal(None)
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

    @property
    def forced(self) -> bool:
        """Whether a forced stop is under way."""
        return self._force

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
            self.in_hand[horde_id] = _JobInHand(horde_id, self._clock(), self._clock() + job.ttl_s, model=job.model)
            self._journal.add(horde_id, job.ttl_s)
            self._start(self._run_job(job, index, horde_id), horde_id)
        for held in self.in_hand.values():
            held.together = max(held.together, len(self.in_hand))

    def hand_back_leftovers(self) -> int:
        """Submit ``faulted`` the jobs a killed predecessor left in hand (journal.py); how many."""
        leftovers = self._journal.take_leftovers()
        for horde_id, ttl_left in leftovers.items():
            now = self._clock()
            self.in_hand[horde_id] = _JobInHand(horde_id, now, now + ttl_left)
            self._start(self._hand_back(horde_id), horde_id)
        if leftovers:
            log.info("handing back %d Horde job(s) the previous process left in hand", len(leftovers))
        return len(leftovers)

    def _start(self, work: Any, horde_id: str) -> None:
        task = asyncio.create_task(work, name=f"horde-job-{horde_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_back(self, horde_id: str) -> None:
        try:
            await self._submit(self.in_hand[horde_id], "", "faulted", 0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never let one job take the worker down
            log.error("Horde job %s could not be handed back: %s", horde_id, bug_report(exc))
        finally:
            self.in_hand.pop(horde_id, None)
            self._journal.remove(horde_id)
            self._on_done()

    async def drain(self) -> None:
        """Wait until every job task has ended (submitted or dropped)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def eta_s(self) -> float | None:
        """Seconds until the jobs in hand finish, from the measured speed.

        None = unknown: no speed measured yet, a submit is waiting to be retried, or a job
        runs past its estimate (a floor of 0 would say "done" while it still runs).
        """
        if not self.in_hand:
            return 0.0
        speed = self._stats.tokens_per_s
        if speed <= 0:
            return None
        now = self._clock()
        left = []
        for job in self.in_hand.values():
            if job.retry_at is not None:
                return None
            if job.submitting:
                continue
            estimate = job.max_tokens / speed - (now - job.started_at)
            if estimate <= 0:
                return None
            left.append(estimate)
        return round(max(left, default=0.0), 1)

    def submit_retry_s(self) -> float:
        """Seconds until the next retry of a failed submit (0 when none is waiting)."""
        now = self._clock()
        waits = [job.retry_at - now for job in self.in_hand.values() if job.retry_at is not None]
        return max(0.0, min(waits)) if waits else 0.0

    def _retry_text(self, job: _JobInHand) -> str:
        left = max(0.0, job.deadline - self._clock())
        return f"submitting Horde job {job.horde_id} failed ({job.retry_words}): retrying for {left:.0f} s more"

    def retry_error(self) -> str | None:
        """The submit error of the job that expires first, its time left counted now (the
        status shows it between retries, not the figure of the last retry)."""
        waiting = [j for j in self.in_hand.values() if j.retry_at is not None and j.retry_words]
        return self._retry_text(min(waiting, key=lambda j: j.deadline)) if waiting else None

    def all_retrying(self) -> bool:
        """True when every job in hand is waiting to retry its submit (the Horde is failing)."""
        return bool(self.in_hand) and all(j.retry_at is not None for j in self.in_hand.values())

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
                self._stats.record_error(outcome.error, self._clock(), "job")
            elif outcome.state == "ok":
                self._stats.clear_error("job")
            if outcome.state == "ok" and outcome.result is not None:
                result = outcome.result
                # A job that ran beside k others of ours is slower than one alone; what one
                # job gets with every thread busy is at least speed * together / threads
                # (batched decoding gives more tokens in all, not fewer, as jobs are added).
                self._stats.record_speed(result.completion_tokens, result.tokens_per_s,
                                         full_load=result.tokens_per_s * min(in_hand.together, self._threads)
                                         / self._threads)
            await self._submit(in_hand, outcome.text, outcome.state, outcome.seed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - never let one job take the worker down
            await self._fault_after_bug(in_hand, exc)
        finally:
            self.in_hand.pop(horde_id, None)
            self._journal.remove(horde_id)
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
            "job",
        )
        try:
            await self._submit(in_hand, "", "faulted", 0)
        except asyncio.CancelledError:
            raise
        except Exception as again:  # noqa: BLE001 - logged by bug_report
            log.error("Horde job %s could not be faulted: %s", in_hand.horde_id, bug_report(again))
            self._stats.record_drop(in_hand.horde_id, f"it could not be submitted faulted "
                                    f"({type(again).__name__})", self._clock())

    async def _submit(self, in_hand: _JobInHand, text: str, state: str, seed: int) -> None:
        horde_id = in_hand.horde_id
        body = {"id": horde_id, "generation": text, "state": state, "seed": int(seed)}
        in_hand.submitting = True

        def retrying(words: str, delay: float) -> None:
            left = in_hand.deadline - self._clock()
            log.warning(
                "could not submit Horde job %s (%s): retrying in %.1f s (%.0f s before it expires)",
                horde_id, words, delay, left,
            )
            in_hand.retry_at = self._clock() + delay
            in_hand.retry_words = words
            self._stats.record_error(self._retry_text(in_hand), self._clock(), "submit")

        outcome = await self._client.submit_until(
            body,
            in_hand.deadline,
            clock=self._clock,
            backoff=Backoff(rng=self._rng),
            give_up=lambda: self._force,
            wait=lambda seconds: wait_or_event(seconds, self._forced, self._sleep),
            on_retry=retrying,
        )
        in_hand.retry_at, in_hand.retry_words = None, ""
        if outcome.kind == "done":
            self._stats.record_submitted(state, outcome.reward, model=in_hand.model,
                                         held_s=self._clock() - in_hand.started_at,
                                         ttl_s=in_hand.deadline - in_hand.started_at)
            self._stats.clear_error("submit")
            return
        reason = outcome.error or "the Horde did not take it"
        log.error("Horde job %s dropped: %s", horde_id, reason)
        self._stats.record_drop(horde_id, reason, self._clock())
        if outcome.kind == "fatal":
            self._fail(reason)

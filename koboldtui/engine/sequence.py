"""One request's life inside the engine: its handle for asyncio, and its per-sequence decode state.

``GenerationStream`` is what callers hold (the ``GenerationHandle`` protocol): the decode
thread hands it text with ``loop.call_soon_threadsafe`` and it turns that into an async
stream and a result future. ``Sequence`` is the decode thread's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator, Callable

from koboldtui.engine.stops import StopMatcher
from koboldtui.engine.types import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    QueueEntry,
    RequestState,
)

_END = object()


def deliver(calls: list[tuple[Callable[..., None], tuple[object, ...]]]) -> None:
    """Run on the owner's loop: one wake-up hands over a whole decode step's events."""
    for fn, args in calls:
        fn(*args)


class GenerationStream:
    """The caller's side of a request; every method runs on the caller's event loop."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop,
                 abort: Callable[[GenerationStream], bool]) -> None:
        self.request = request
        self.genkey = request.genkey
        self._loop = loop
        self._abort = abort
        self._pieces: asyncio.Queue[object] = asyncio.Queue()
        self._parts: list[str] = []
        self._result: asyncio.Future[GenerationResult] = loop.create_future()

    # -- called from the decode thread (through call_soon_threadsafe) --
    def push_text(self, text: str) -> None:
        self._parts.append(text)
        self._pieces.put_nowait(text)

    def push_result(self, result: GenerationResult) -> None:
        if not self._result.done():
            self._result.set_result(result)
        self._pieces.put_nowait(_END)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    # -- the GenerationHandle protocol --
    async def stream(self) -> AsyncIterator[str]:
        while True:
            item = await self._pieces.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]

    async def result(self) -> GenerationResult:
        return await asyncio.shield(self._result)

    def partial_text(self) -> str:
        return "".join(self._parts)

    def done(self) -> bool:
        return self._result.done()

    def abort(self) -> None:
        """Abort this request — by its handle, never by a genkey another request may share."""
        self._abort(self)


class Sequence:
    """Decode-thread state of one request: tokens to feed, position, sampler, output text."""

    def __init__(self, stream: GenerationStream, prompt_tokens: list[int], max_tokens: int,
                 truncated: int, order: int, sampler: object) -> None:
        self.stream = stream
        self.request = stream.request
        self.order = order  # FIFO tie-breaker inside a priority level
        self.prompt_tokens = prompt_tokens
        self.to_feed: list[int] = list(prompt_tokens)  # tokens not yet in the KV cache
        self.max_tokens = max_tokens
        self.truncated = truncated
        self.sampler = sampler
        self.seq_id: int | None = None
        self.n_past = 0
        self.generated: list[int] = []
        self.last_token: int | None = None  # sampled, not yet decoded
        self.state = RequestState.QUEUED
        self.aborted = False
        self.preemptions = 0
        self.cached_tokens = 0  # prompt tokens found in the slot's cache at admission
        # Twins (OpenAI ``n``): identical prompts admitted together. The leader feeds the prompt;
        # each twin waits in its own slot and gets a copy of the leader's KV (llama_memory_seq_cp).
        self.twin_of: Sequence | None = None
        self.twins: list[Sequence] = []
        self.queued_at = time.monotonic()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.finish_reason: FinishReason | None = None
        self.text_parts: list[str] = []
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopMatcher(self.request.stop)

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.request.priority, self.order)

    def decode_piece(self, piece: bytes) -> str:
        """Bytes of one token → text safe to emit (UTF-8 completed, stop prefixes held)."""
        return self.stops.feed(self._utf8.decode(piece))

    def flush_text(self) -> str:
        return self.stops.feed(self._utf8.decode(b"", final=True)) + self.stops.flush()

    def prepare_resume(self) -> None:
        """After preemption: everything decoded so far must be fed again as prompt."""
        self.to_feed = list(self.prompt_tokens) + list(self.generated)
        self.twin_of = None
        self.last_token = None
        self.n_past = 0
        self.seq_id = None
        self.state = RequestState.QUEUED
        self.preemptions += 1

    def tokens_per_s(self, now: float) -> float:
        if self.first_token_at is None or len(self.generated) <= 1:
            return 0.0
        span = (self.finished_at or now) - self.first_token_at
        return (len(self.generated) - 1) / span if span > 0 else 0.0

    def queue_entry(self, now: float) -> QueueEntry:
        return QueueEntry(
            genkey=self.request.genkey,
            origin=self.request.origin,
            state=self.state,
            prompt_tokens=len(self.prompt_tokens),
            tokens=len(self.generated),
            tokens_per_s=round(self.tokens_per_s(now), 2),
            age_s=round(now - self.queued_at, 2),
            cached_tokens=self.cached_tokens,
        )

    def result(self, error: str | None = None, error_status: int = 500) -> GenerationResult:
        return GenerationResult(
            genkey=self.request.genkey,
            text="".join(self.text_parts),
            finish_reason=self.finish_reason or FinishReason.ERROR,
            prompt_tokens=len(self.prompt_tokens),
            completion_tokens=len(self.generated),
            truncated_tokens=self.truncated,
            seed=getattr(self.sampler, "seed", -1),
            queued_at=self.queued_at,
            first_token_at=self.first_token_at,
            finished_at=self.finished_at or time.monotonic(),
            error=error,
            error_status=error_status,
            stop_text=self.stops.matched,
            logprobs=tuple(lp) if (lp := getattr(self.sampler, "logprobs", None)) is not None else None,
            cached_tokens=self.cached_tokens,
        )

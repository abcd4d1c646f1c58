"""A local request waits in the engine's queue for at most ``queue_timeout_s``, then gets a clear 503.

Without a limit, a request queued behind long generations could wait forever while its
client has long given up. When the time is up and the request still has not reached a
slot, it is aborted; its handle's ``result()`` then raises ``QueueWaitError`` (503 with
Retry-After, in words), and a stream that already began ends with finish reason "abort".
Requests already generating are never cut by this limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from koboldtui.engine.interface import GenerationHandle, TextEngine
from koboldtui.engine.types import EngineError, GenerationRequest, GenerationResult, RequestState


class QueueWaitError(EngineError):
    """The request waited its maximum in the queue without reaching a slot."""

    status = 503

    def __init__(self, waited_s: float) -> None:
        super().__init__(
            f"the request waited {waited_s:.0f} s in the queue without a free slot and was dropped: "
            "the instance is busy; retry later, or raise --queue-timeout / --parallel"
        )


class QueueLimitedHandle:
    """A GenerationHandle whose ``result()`` says "waited too long" instead of an empty abort."""

    def __init__(self, inner: GenerationHandle, limit_s: float) -> None:
        self._inner = inner
        self._limit_s = limit_s
        self.expired = False
        self.genkey: str = inner.genkey
        self.request: GenerationRequest = inner.request

    def stream(self) -> AsyncIterator[str]:
        return self._inner.stream()

    async def result(self) -> GenerationResult:
        result = await self._inner.result()
        if self.expired:
            raise QueueWaitError(self._limit_s)
        return result

    def partial_text(self) -> str:
        return self._inner.partial_text()

    def done(self) -> bool:
        return self._inner.done()

    def abort(self) -> None:
        self._inner.abort()


def limit_queue_wait(engine: TextEngine, handle: GenerationHandle, limit_s: float) -> QueueLimitedHandle:
    """Wrap ``handle`` and arm its queue-wait limit on the running loop."""
    limited = QueueLimitedHandle(handle, limit_s)

    def check() -> None:
        try:
            queued = any(entry.genkey == handle.genkey and entry.state is RequestState.QUEUED
                         for entry in engine.snapshot().queue)
        except Exception:  # noqa: BLE001 - a closing engine: nothing left to limit
            return
        if queued:
            limited.expired = True
            handle.abort()

    timer = asyncio.get_running_loop().call_later(limit_s, check)
    task = asyncio.ensure_future(handle.result())
    task.add_done_callback(lambda _: timer.cancel())
    return limited

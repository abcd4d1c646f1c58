"""Free a slot when the client goes away: a closed connection aborts its generation.

Streaming responses already abort in their ``finally``; a plain request would otherwise
keep generating for nobody until ``max_length``.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request

from koboldtui.engine.interface import GenerationHandle
from koboldtui.engine.types import GenerationResult


async def result_unless_disconnected(request: Request, handle: GenerationHandle) -> GenerationResult:
    """Await the result; if the client disconnects first, abort the request (the result
    then comes back with finish_reason "abort" and nobody reads it)."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                handle.abort()
                return

    watcher = asyncio.create_task(watch())
    try:
        return await handle.result()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

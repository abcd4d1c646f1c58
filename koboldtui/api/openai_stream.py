"""OpenAI server-sent events for one request's choices, one stream however many there are.

With ``n`` > 1 OpenAI sends every choice in the same stream: each chunk names its choice in
``choices[0].index``, the choices' chunks interleave as they are decoded, each choice ends
with its own ``finish_reason``, and one ``usage`` chunk (when asked) and ``[DONE]`` close
the stream. The engine decodes the choices side by side, so this module only merges their
text streams in arrival order. The stream ending early (the client went away) aborts every
choice, which frees their slots.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from koboldtui.engine.interface import GenerationHandle
from koboldtui.engine.types import FinishReason, GenerationResult


@dataclass(frozen=True)
class Shape:
    """What the answer carries besides text: logprobs (and how many alternatives), usage chunk."""

    chat: bool
    logprobs: bool = False
    top_logprobs: int = 0
    include_usage: bool = False


def finish_reason(reason: FinishReason) -> str:
    """OpenAI's name for why a choice ended ("abort": aborted, or ended by a stopping instance)."""
    return {FinishReason.LENGTH: "length", FinishReason.ABORT: "abort"}.get(reason, "stop")


def usage(results: Sequence[GenerationResult]) -> dict[str, Any]:
    """One prompt (fed once, shared by the choices), every choice's completion tokens."""
    prompt = results[0].prompt_tokens
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": results[0].cached_tokens}}


@dataclass(frozen=True)
class ChunkWriter:
    """Encodes the chunks of one response (its id, creation time and model are on every chunk)."""

    rid: str
    created: int
    model: str
    shape: Shape

    def payload(self, choices: list[dict[str, Any]], usage_: dict[str, Any] | None = None) -> bytes:
        data: dict[str, Any] = {"id": self.rid, "object": "chat.completion.chunk" if self.shape.chat
                                else "text_completion", "created": self.created, "model": self.model,
                                "choices": choices}
        if self.shape.include_usage:
            data["usage"] = usage_
        return f"data: {json.dumps(data)}\n\n".encode()

    def chunk(self, index: int, text: str | None, finish: str | None = None, role: bool = False,
              logprobs: dict[str, Any] | None = None) -> bytes:
        if self.shape.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        else:
            choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": logprobs}
        return self.payload([choice])


_ENDED = None  # a choice's text stream ended: its result is in


async def stream_choices(handles: Sequence[GenerationHandle], writer: ChunkWriter,
                         logprobs: Callable[[GenerationResult], dict[str, Any] | None]) -> AsyncIterator[bytes]:
    """The SSE body for ``handles`` (choice ``i`` is ``handles[i]``): chat streams open each
    choice with a ``role`` delta; each choice's last chunk has its finish reason and all of
    its logprobs. Leaving early (cancelled on a disconnect, or closed) aborts every choice."""
    arrivals: asyncio.Queue[tuple[int, str | None]] = asyncio.Queue()

    async def pump(index: int, handle: GenerationHandle) -> None:
        try:
            async for piece in handle.stream():
                arrivals.put_nowait((index, piece))
        finally:  # also when the stream raises: result() below then raises the same error
            arrivals.put_nowait((index, _ENDED))

    pumps = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        if writer.shape.chat:
            for index in range(len(handles)):
                yield writer.chunk(index, "", role=True)
        results: dict[int, GenerationResult] = {}
        while len(results) < len(handles):
            index, piece = await arrivals.get()
            if piece is not _ENDED:
                yield writer.chunk(index, piece)
                continue
            result = results[index] = await handles[index].result()
            yield writer.chunk(index, None if writer.shape.chat else "", finish_reason(result.finish_reason),
                               logprobs=logprobs(result))
        if writer.shape.include_usage:
            yield writer.payload([], usage([results[i] for i in range(len(handles))]))
        yield b"data: [DONE]\n\n"
    finally:
        for task in pumps:
            task.cancel()
        for handle in handles:
            handle.abort()  # no-op once finished; frees the slots if the client disconnected

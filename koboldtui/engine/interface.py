"""The engine as the API and the Horde worker see it: a Protocol, so neither imports llama_cpp."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from koboldtui.engine.types import EngineSnapshot, GenerationRequest, GenerationResult


class GenerationHandle(Protocol):
    """A submitted request: stream its text, await its result, or abort it."""

    genkey: str
    request: GenerationRequest

    def stream(self) -> AsyncIterator[str]:
        """Text pieces as they are decoded (stop sequences already cut). Call once."""
        ...

    async def result(self) -> GenerationResult:
        """Wait for the end; never raises for abort/length (see ``finish_reason``)."""
        ...

    def partial_text(self) -> str:
        """The text so far (for /api/extra/generate/check)."""
        ...

    def done(self) -> bool:
        """True once the result is in (for /api/extra/last_logprobs)."""
        ...

    def abort(self) -> None: ...


class TextEngine(Protocol):
    """What the rest of the runtime needs from the engine."""

    model_name: str
    model_path: str
    n_ctx: int
    n_ctx_per_seq: int
    parallel: int
    n_batch: int
    n_ubatch: int

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request; raises QueueFullError / PromptTooLongError / EngineClosedError.

        Must be called from the asyncio event loop that consumes the handle; it may
        tokenize there, so servers call ``submit_async``.
        """
        ...

    async def submit_async(self, request: GenerationRequest) -> GenerationHandle:
        """``submit`` with the tokenizing done off the event loop (same errors)."""
        ...

    async def submit_many_async(self, requests: list[GenerationRequest]) -> list[GenerationHandle]:
        """Requests with one prompt (OpenAI ``n`` choices) queued as one unit, all or none,
        so the prompt is fed once and its KV shared (same errors as ``submit_async``)."""
        ...

    def abort(self, genkey: str) -> bool: ...

    def snapshot(self) -> EngineSnapshot: ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...

    def close(self) -> None:
        """Abort everything and free the model (blocking: run it off the event loop)."""
        ...

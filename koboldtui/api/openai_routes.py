"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (with streaming).

Errors use OpenAI's shape ({"error": {message, type, param, code}}), and a prompt that
does not fit the context is refused with 400 ``context_length_exceeded`` — OpenAI
never truncates silently, so neither do we on these routes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from koboldtui.api.disconnect import result_unless_disconnected
from koboldtui.api.kobold import model_id
from koboldtui.api.validation import (
    BadRequest,
    get_bool,
    get_int,
    get_number,
    get_str_list,
    json_body,
)
from koboldtui.engine.interface import GenerationHandle
from koboldtui.engine.types import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    Origin,
    SamplingParams,
    new_genkey,
)
from koboldtui.runtime import Runtime


def _sampling(body: dict[str, Any]) -> SamplingParams:
    d = SamplingParams()
    return SamplingParams(
        temperature=get_number(body, "temperature", 1.0, lo=0, hi=2),
        top_p=get_number(body, "top_p", 1.0, lo=0, hi=1),
        top_k=get_int(body, "top_k", 0, lo=0, hi=1_000_000),  # common extension
        min_p=get_number(body, "min_p", 0.0, lo=0, hi=1),
        rep_pen=get_number(body, "repetition_penalty", 1.0, lo=0.01, hi=100),
        rep_pen_range=d.rep_pen_range,
        presence_penalty=get_number(body, "presence_penalty", 0.0, lo=-2, hi=2),
        frequency_penalty=get_number(body, "frequency_penalty", 0.0, lo=-2, hi=2),
        seed=_seed(body),
    )


def _seed(body: dict[str, Any]) -> int:
    seed = get_int(body, "seed", -1, lo=-1, hi=2**63 - 1)
    return seed % (2**32) if seed >= 0 else -1


def _max_tokens(body: dict[str, Any], default: int | None, ctx: int, prompt_tokens_hint: int = 0) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            return get_int(body, name, 16, lo=1, hi=10_000_000)
    return default if default is not None else max(1, ctx - prompt_tokens_hint)


def _chat_prompt(runtime: Runtime, body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects", "messages")
    flat: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
        content = msg.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            texts = [t for t in parts if isinstance(t, str)]
            if len(texts) != len(content):
                raise BadRequest(f"messages[{i}].content: only text parts are supported", "messages")
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}].content must be a string or a list of text parts", "messages")
        flat.append({"role": msg["role"], "content": content})
    return runtime.require_engine().apply_chat_template(flat)


def _finish(reason: FinishReason) -> str:
    return "length" if reason is FinishReason.LENGTH else "stop"


def _usage(result: GenerationResult) -> dict[str, Any]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def _choices(runtime: Runtime, body: dict[str, Any], stream: bool) -> int:
    """OpenAI ``n``: up to --parallel choices, decoded side by side from one prompt's KV."""
    parallel = runtime.require_engine().parallel
    n = get_int(body, "n", 1, lo=1, hi=parallel,
                hint=f": this instance decodes at most --parallel ({parallel}) choices at once")
    if n > 1 and stream:
        raise BadRequest("'n' > 1 is not supported with 'stream': true yet; send n = 1 or stream = false", "n")
    return n


async def _several(request: Request, runtime: Runtime, gen: GenerationRequest, n: int, chat: bool) -> JSONResponse:
    """n choices: n requests with the same prompt; the engine feeds the prompt once and copies
    its KV to the others (each samples with its own seed: seed, seed + 1, ... when one is given)."""
    seed = gen.sampling.seed
    handles = [runtime.submit(replace(gen, genkey=new_genkey(), sampling=replace(
        gen.sampling, seed=(seed + i) % 2**32 if seed >= 0 else -1))) for i in range(n)]

    async def watch() -> None:  # one reader of the request: a disconnect aborts every choice
        while (await request.receive())["type"] != "http.disconnect":
            pass
        for handle in handles:
            handle.abort()

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(h.result() for h in handles))
    finally:
        watcher.cancel()
        for handle in handles:
            handle.abort()  # no-op once finished
    failed = next((r for r in results if r.error), None)
    if failed is not None:
        raise BadRequest(f"generation failed: {failed.error}", status=500)
    choices: list[dict[str, Any]] = []
    for i, result in enumerate(results):
        if chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": result.text},
                            "finish_reason": _finish(result.finish_reason), "logprobs": None})
        else:
            choices.append({"index": i, "text": result.text, "logprobs": None,
                            "finish_reason": _finish(result.finish_reason)})
    completion = sum(r.completion_tokens for r in results)
    usage = _usage(results[0])
    usage.update(completion_tokens=completion, total_tokens=results[0].prompt_tokens + completion)
    return JSONResponse({"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
                         "object": "chat.completion" if chat else "text_completion",
                         "created": int(time.time()), "model": model_id(runtime),
                         "choices": choices, "usage": usage})


def openai_routes(runtime: Runtime) -> list[Route]:
    """The OpenAI-compatible routes bound to one runtime."""

    def build(body: dict[str, Any], prompt: str, chat: bool) -> GenerationRequest:
        engine = runtime.require_engine()
        ctx = engine.n_ctx_per_seq
        default = None if chat else 16
        if default is None:
            hint = len(engine.tokenize(prompt))
            max_tokens = _max_tokens(body, None, ctx, hint)
        else:
            max_tokens = _max_tokens(body, default, ctx)
        return GenerationRequest(
            prompt=prompt, max_tokens=max_tokens, sampling=_sampling(body),
            stop=get_str_list(body, "stop", max_items=4), origin=Origin.LOCAL,
            truncate_prompt=False,
        )

    async def respond(request: Request, chat: bool) -> Any:
        body = await json_body(request)
        if chat:
            prompt = _chat_prompt(runtime, body)
        else:
            given = body.get("prompt")
            if isinstance(given, list) and len(given) == 1 and isinstance(given[0], str):
                given = given[0]
            if not isinstance(given, str):
                raise BadRequest("'prompt' must be a string (one prompt per request)", "prompt")
            prompt = given
        gen = build(body, prompt, chat)
        stream = get_bool(body, "stream", False)
        n = _choices(runtime, body, stream)
        if n > 1:
            return await _several(request, runtime, gen, n, chat)
        handle = runtime.submit(gen)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = model_id(runtime)
        if stream:
            return StreamingResponse(_stream(handle, rid, created, model, chat),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await result_unless_disconnected(request, handle)
        if result.error:
            raise BadRequest(f"generation failed: {result.error}", status=500)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "finish_reason": _finish(result.finish_reason), "logprobs": None}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None,
                      "finish_reason": _finish(result.finish_reason)}
            obj = "text_completion"
        return JSONResponse({"id": rid, "object": obj, "created": created, "model": model,
                             "choices": [choice], "usage": _usage(result)})

    async def completions(request: Request) -> Any:
        return await respond(request, chat=False)

    async def chat_completions(request: Request) -> Any:
        return await respond(request, chat=True)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{
            "id": model_id(runtime), "object": "model", "created": int(runtime.started_at),
            "owned_by": "koboldtui"}]})

    return [
        Route("/v1/models", models),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]


async def _stream(handle: GenerationHandle, rid: str, created: int, model: str,
                  chat: bool) -> AsyncIterator[bytes]:
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta_text: str | None, finish: str | None, role: bool = False) -> bytes:
        if chat:
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if delta_text is not None:
                delta["content"] = delta_text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": delta_text or "", "finish_reason": finish, "logprobs": None}
        payload = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}
        return f"data: {json.dumps(payload)}\n\n".encode()

    try:
        if chat:
            yield chunk("", None, role=True)
        async for piece in handle.stream():
            yield chunk(piece, None)
        result = await handle.result()
        yield chunk(None if chat else "", _finish(result.finish_reason))
        yield b"data: [DONE]\n\n"
    finally:
        handle.abort()  # no-op once finished; frees the slot if the client disconnected

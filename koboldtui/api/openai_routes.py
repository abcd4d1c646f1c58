"""OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (streamed in openai_stream.py).

Errors use OpenAI's shape ({"error": {message, type, param, code}}). The samplers come from
KoboldCpp's fields as well as OpenAI's, through the parser /api/v1/generate uses
(koboldcpp_dialect.py). A prompt that does not fit is refused with 400
``context_length_exceeded`` as OpenAI does — unless the body speaks KoboldCpp, which cuts
it from the front as KoboldCpp does (the rule and why: koboldcpp_dialect.py). Chat turns
end at the template's turn markers (turn_markers.py); ``response_format`` is enforced with
a grammar; ``logprobs`` come from the engine; ``tools`` are refused in words rather than
ignored.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from koboldtui.api.disconnect import result_unless_disconnected
from koboldtui.api.kobold import model_id
from koboldtui.api.kobold_fields import (
    DEFAULT_MAX_LENGTH,
    clamp_lengths,
    read_ban_texts,
    surely_enough_tail,
    token_bytes_bound,
)
from koboldtui.api.koboldcpp_dialect import (
    completion_logprob_count,
    openai_sampling,
    openai_seed,
    speaks_koboldcpp,
)
from koboldtui.api.logprob_format import completion_logprobs, content_logprobs
from koboldtui.api.openai_stream import ChunkWriter, Shape, finish_reason, stream_choices, usage
from koboldtui.api.turn_markers import turn_stops
from koboldtui.api.validation import (
    BadRequest,
    check_text,
    get_bool,
    get_int,
    get_str,
    get_str_list,
    json_body,
)
from koboldtui.engine.interface import GenerationHandle
from koboldtui.engine.types import (
    GenerationRequest,
    GenerationResult,
    Origin,
    new_genkey,
)
from koboldtui.request_book import Requester
from koboldtui.runtime import Runtime

DEFAULT_CHAT_MAX_TOKENS = 400  # as KoboldCpp's chat completions; completions default to OpenAI's 16
DEFAULT_COMPLETION_MAX_TOKENS = 16


def _logprob_request(body: dict[str, Any], chat: bool) -> tuple[bool, int]:
    if chat:
        wanted = get_bool(body, "logprobs", False)
        top = get_int(body, "top_logprobs", 0, lo=0, hi=20)
        return wanted, top if wanted else 0
    return completion_logprob_count(body)


async def _grammar(body: dict[str, Any]) -> str:
    """The grammar that enforces ``response_format`` ("" for plain text); a schema converts
    in a worker thread with a deadline (engine/json_grammar.py)."""
    fmt = body.get("response_format")
    if fmt is None:
        return ""
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    from koboldtui.engine.json_grammar import json_object_grammar, schema_grammar

    if kind == "text":
        return ""
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest("response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": "
                             "{...}}}", "response_format")
        return await schema_grammar(schema)
    raise BadRequest("'response_format' type must be 'text', 'json_object' or 'json_schema'", "response_format")


def _refuse_tools(body: dict[str, Any]) -> None:
    for name in ("tools", "functions"):
        if body.get(name) and body.get("tool_choice", body.get("function_call")) != "none":
            raise BadRequest(f"'{name}' (function calling) is not supported by this server: send the "
                             "request without it, or with tool_choice 'none'", name)


def _chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
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
        flat.append({"role": check_text(msg["role"], "messages"), "content": check_text(content, "messages")})
    return flat


async def _refuse_hopeless(engine: Any, prompt: str, param: str) -> None:
    """A prompt with more bytes than the context could hold tokens is a 400 before it is tokenized."""
    if len(prompt) <= 4096:
        return
    size = len(prompt.encode("utf-8"))
    bound = await token_bytes_bound(engine)
    if bound and size > bound * engine.n_ctx_per_seq:
        raise BadRequest(f"This model's maximum context length is {engine.n_ctx_per_seq} tokens; the "
                         f"prompt is {size} bytes, at least {size // bound} tokens. Please reduce the "
                         "length of the prompt.", param, code="context_length_exceeded")


def _choices(runtime: Runtime, body: dict[str, Any]) -> int:
    """OpenAI ``n``: up to --parallel choices, decoded side by side from one prompt's KV."""
    parallel = runtime.require_engine().parallel
    n = get_int(body, "n", 1, lo=1, hi=parallel,
                hint=f": this instance decodes at most --parallel ({parallel}) choices at once")
    return n


async def _submit_choices(runtime: Runtime, gen: GenerationRequest, n: int,
                          requester: Requester | None = None) -> list[GenerationHandle]:
    """n choices: n requests with the same prompt, queued as one unit so the engine feeds the
    prompt once and copies its KV to the others (each samples with its own seed: seed,
    seed + 1, ... when one is given). A full queue refuses all of them."""
    seed = gen.sampling.seed
    return await runtime.submit_many([gen] + [
        replace(gen, genkey=new_genkey(), sampling=replace(gen.sampling, seed=(seed + i) % 2**32 if seed >= 0 else -1))
        for i in range(1, n)], requester)


async def _results(request: Request, handles: list[GenerationHandle]) -> list[GenerationResult]:
    """Every choice's result; a disconnect aborts them all."""
    if len(handles) == 1:
        return [await result_unless_disconnected(request, handles[0])]

    async def watch() -> None:  # one reader of the request: a disconnect aborts every choice
        while (await request.receive())["type"] != "http.disconnect":
            pass
        for handle in handles:
            handle.abort()

    watcher = asyncio.create_task(watch())
    try:
        return list(await asyncio.gather(*(h.result() for h in handles)))
    finally:
        watcher.cancel()
        for handle in handles:
            handle.abort()  # no-op once finished


def openai_routes(runtime: Runtime) -> list[Route]:
    """The OpenAI-compatible routes bound to one runtime."""

    async def build(body: dict[str, Any], chat: bool) -> tuple[GenerationRequest, Shape]:
        engine = runtime.require_engine()
        _refuse_tools(body)
        kobold = speaks_koboldcpp(body)  # KoboldCpp's context rule (koboldcpp_dialect.py)
        stops = get_str_list(body, "stop") + get_str_list(body, "stop_sequence")
        memory = ""
        if chat:
            messages = _chat_messages(body)
            prompt = await asyncio.to_thread(engine.apply_chat_template, messages)
            stops += turn_stops(prompt, (m["role"] for m in messages))
        else:
            given = body.get("prompt")
            if isinstance(given, list) and len(given) == 1 and isinstance(given[0], str):
                given = given[0]
            if not isinstance(given, str):
                raise BadRequest("'prompt' must be a string (one prompt per request)", "prompt")
            prompt = check_text(given, "prompt")
            memory = get_str(body, "memory", "")
        ctx = engine.n_ctx_per_seq
        max_context: int | None = None
        if kobold:
            max_tokens, max_context = clamp_lengths(
                await _max_tokens(body, prompt, chat, kobold=True),
                get_int(body, "max_context_length", ctx, lo=16, hi=10_000_000), ctx)
            prompt = await surely_enough_tail(engine, prompt, max_context)
        else:
            await _refuse_hopeless(engine, prompt, "messages" if chat else "prompt")
            max_tokens = await _max_tokens(body, prompt, chat, kobold=False)
        wants, top = _logprob_request(body, chat)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        shape = Shape(chat=chat, logprobs=wants, top_logprobs=top, include_usage=include_usage)
        sampling = openai_sampling(body, logprobs=max(top, 1) if wants else 0, seed=openai_seed(body),
                                   grammar=await _grammar(body))
        await read_ban_texts(engine, sampling)
        n_keep = len(await asyncio.to_thread(engine.tokenize, memory)) if memory else 0
        gen = GenerationRequest(
            prompt=memory + prompt, max_tokens=max_tokens, sampling=sampling,
            stop=tuple(dict.fromkeys(stops)), origin=Origin.LOCAL,
            ban_eos=get_bool(body, "ban_eos_token", False) or get_bool(body, "use_default_badwordsids", False),
            bypass_eos=get_bool(body, "bypass_eos", False), render_special=get_bool(body, "render_special", False),
            max_context=max_context, truncate_prompt=kobold, n_keep=n_keep,
        )
        return gen, shape

    async def _max_tokens(body: dict[str, Any], prompt: str, chat: bool, *, kobold: bool) -> int:
        """OpenAI: max_completion_tokens / max_tokens (at least 1). KoboldCpp: also
        max_length, and 0 or less means its default, as KoboldCpp reads it there."""
        for name in ("max_completion_tokens", "max_tokens") + (("max_length",) if kobold else ()):
            if body.get(name) is not None:
                if not kobold:
                    return get_int(body, name, 16, lo=1, hi=10_000_000)
                given = get_int(body, name, DEFAULT_MAX_LENGTH, hi=10_000_000)
                return given if given > 0 else DEFAULT_MAX_LENGTH
        if not chat:
            return DEFAULT_MAX_LENGTH if kobold else DEFAULT_COMPLETION_MAX_TOKENS
        engine = runtime.require_engine()
        used = len(await asyncio.to_thread(engine.tokenize, prompt))
        return max(1, min(DEFAULT_CHAT_MAX_TOKENS, engine.n_ctx_per_seq - used))

    async def respond(request: Request, chat: bool) -> Any:
        body = await json_body(request)
        gen, shape = await build(body, chat)
        stream = get_bool(body, "stream", False)
        genkey = get_str(body, "genkey", "")  # KoboldCpp's field: selects among this sender's own requests
        if len(genkey) > 128:
            raise BadRequest("'genkey' must be at most 128 characters", "genkey")
        handles = await _submit_choices(runtime, gen, _choices(runtime, body),
                                        Requester(request.client.host if request.client else "", genkey))
        writer = ChunkWriter(("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24], int(time.time()),
                             model_id(runtime), shape)
        if stream:
            return StreamingResponse(stream_choices(handles, writer, lambda r: _logprobs(r, shape)),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        results = await _results(request, handles)
        failed = next((r for r in results if r.error), None)
        if failed is not None:
            raise BadRequest(f"generation failed: {failed.error}", status=failed.error_status)
        choices: list[dict[str, Any]] = []
        for i, result in enumerate(results):
            finish, logprobs = finish_reason(result.finish_reason), _logprobs(result, shape)
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": result.text},
                                "finish_reason": finish, "logprobs": logprobs})
            else:
                choices.append({"index": i, "text": result.text, "logprobs": logprobs, "finish_reason": finish})
        return JSONResponse({"id": writer.rid, "object": "chat.completion" if chat else "text_completion",
                             "created": writer.created, "model": writer.model, "choices": choices,
                             "usage": usage(results)})

    def _logprobs(result: GenerationResult, shape: Shape) -> dict[str, Any] | None:
        if not shape.logprobs:
            return None
        engine = runtime.require_engine()
        if shape.chat:
            return {"content": content_logprobs(engine, result, shape.top_logprobs)}
        return completion_logprobs(engine, result, shape.top_logprobs)

    async def completions(request: Request) -> Any:
        return await respond(request, chat=False)

    async def chat_completions(request: Request) -> Any:
        return await respond(request, chat=True)

    def model_card() -> dict[str, Any]:
        return {"id": model_id(runtime), "object": "model", "created": int(runtime.started_at),
                "owned_by": "koboldtui"}

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def retrieve_model(request: Request) -> JSONResponse:
        wanted = request.path_params["model"]
        card = model_card()
        if wanted not in (card["id"], runtime.model_path.stem):
            raise BadRequest(f"The model '{wanted}' does not exist: this instance serves '{card['id']}'",
                             "model", status=404, code="model_not_found")
        return JSONResponse(card)

    return [
        Route("/v1/models", models),
        Route("/v1/models/{model:path}", retrieve_model),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]

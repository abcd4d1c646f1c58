"""KoboldAI / KoboldCpp routes: /api/v1/* and /api/extra/*.

Field names, defaults and response shapes follow KoboldCpp so existing clients
(SillyTavern, KoboldAI Lite, the Horde bridge, the ``koboldapi`` package) work unchanged.
Prompts longer than ``max_context_length - max_length`` are cut from the left after the
``memory``, as KoboldCpp does (fields: kobold_fields.py). ``generate/check`` and
``last_logprobs`` answer only for the ``genkey`` the client chose, among the
requests its own address sent with that key (``request_book.py``): no client ever reads or
aborts another's request, and two requests that share a key never end each other.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from koboldtui import __version__
from koboldtui.api.disconnect import result_unless_disconnected
from koboldtui.api.ignored_fields import ignored_fields
from koboldtui.api.kobold_fields import DEFAULT_MAX_LENGTH, KoboldOptions, request_from_body
from koboldtui.api.logprob_format import content_logprobs
from koboldtui.api.validation import BadRequest, get_bool, get_str, json_body
from koboldtui.engine.types import FinishReason, GenerationResult
from koboldtui.request_book import Requester
from koboldtui.runtime import Runtime

KOBOLDAI_API_VERSION = "1.2.5"
KOBOLDCPP_COMPAT_VERSION = "1.80"
PROTECTED_MODEL = "koboldcpp/protected-model"


def model_id(runtime: Runtime) -> str:
    """The name clients and the Horde see: koboldcpp/<gguf basename>."""
    return "koboldcpp/" + runtime.model_path.stem


def kobold_finish(reason: FinishReason) -> str:
    """length / abort (aborted, or ended by a stopping instance) / stop."""
    return {FinishReason.LENGTH: "length", FinishReason.ABORT: "abort"}.get(reason, "stop")


def answer_text(result: GenerationResult, options: KoboldOptions) -> str:
    """The text as KoboldCpp returns it: with ``trim_stop: false`` the stop sequence stays."""
    if not options.trim_stop and result.stop_text:
        return result.text + result.stop_text
    return result.text


def requester_of(request: Request, genkey: str = "") -> Requester:
    """Who sent ``request``: its client address and the genkey it chose (see request_book.py)."""
    return Requester(request.client.host if request.client else "", genkey)


def kobold_routes(runtime: Runtime) -> list[Route]:
    """All KoboldAI-compatible routes bound to one runtime."""

    async def generate(request: Request) -> JSONResponse:
        gen, options = await request_from_body(runtime, await json_body(request))
        handle = await runtime.submit(gen, requester_of(request, options.genkey))
        result = await result_unless_disconnected(request, handle)
        if result.error:
            raise BadRequest(f"generation failed: {result.error}", status=result.error_status)
        answer: dict[str, Any] = {
            "text": answer_text(result, options), "finish_reason": kobold_finish(result.finish_reason),
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
        }
        if options.logprobs:
            answer["logprobs"] = {"content": content_logprobs(runtime.require_engine(), result, 5)}
        return JSONResponse({"results": [answer]})

    async def generate_stream(request: Request) -> StreamingResponse:
        gen, options = await request_from_body(runtime, await json_body(request))
        handle = await runtime.submit(gen, requester_of(request, options.genkey))

        async def events() -> AsyncIterator[bytes]:
            try:
                async for piece in handle.stream():
                    yield _sse({"token": piece, "finish_reason": None})
                result = await handle.result()
                if not options.trim_stop and result.stop_text:
                    yield _sse({"token": result.stop_text, "finish_reason": None})
                yield _sse({"token": "", "finish_reason": kobold_finish(result.finish_reason)})
            finally:
                handle.abort()  # this request only (by handle); no-op when done; frees the slot if the client went away

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def optional_body(request: Request) -> dict[str, Any]:
        return await json_body(request) if (await request.body()).strip() else {}

    async def check(request: Request) -> JSONResponse:
        genkey = get_str(await optional_body(request), "genkey", "")
        handle = runtime.requests.to_show(requester_of(request, genkey))  # only the sender's own
        return JSONResponse({"results": [{"text": handle.partial_text() if handle else ""}]})

    async def last_logprobs(request: Request) -> JSONResponse:
        genkey = get_str(await optional_body(request), "genkey", "")
        handle = runtime.requests.to_show(requester_of(request, genkey))
        content: list[dict[str, Any]] = []
        if handle is not None and handle.done():
            content = content_logprobs(runtime.require_engine(), await handle.result(), 5)
        return JSONResponse({"logprobs": {"content": content}})

    async def abort(request: Request) -> JSONResponse:
        genkey = get_str(await optional_body(request), "genkey", "")
        engine = runtime.require_engine()
        # the sender's own request with that key (without a key: its one request in flight, as
        # KoboldCpp's single-user rule); else a request's own id as the status shows it (KTUI…,
        # what the panel sends; Horde jobs too)
        handle = runtime.requests.to_abort(requester_of(request, genkey))
        if handle is not None:
            handle.abort()
            found = True
        else:
            found = bool(genkey) and engine.abort(genkey)
        flag = "true" if found else "false"  # KoboldCpp answers with strings
        return JSONResponse({"success": flag, "done": flag})

    async def tokencount(request: Request) -> JSONResponse:
        body = await json_body(request)
        text = get_str(body, "prompt", required=True)
        engine = runtime.require_engine()
        ids = await asyncio.to_thread(engine.tokenize, text)
        if not get_bool(body, "special", True):
            ids = without_bos(engine, ids)
        return JSONResponse({"value": len(ids), "ids": ids})

    async def detokenize(request: Request) -> JSONResponse:
        ids = (await json_body(request)).get("ids")
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise BadRequest("'ids' must be a list of token ids, e.g. {\"ids\": [1, 2, 3]}", "ids")
        engine = runtime.require_engine()
        n_vocab = getattr(getattr(engine, "vocab", None), "n_tokens", None)
        bad = [t for t in ids if t < 0 or (n_vocab is not None and t >= n_vocab)]
        if bad:
            raise BadRequest(f"token id {bad[0]} is not in this model's vocabulary", "ids")
        text = await asyncio.to_thread(engine.detokenize, ids)
        return JSONResponse({"result": text, "success": True})

    async def json_to_grammar(request: Request) -> JSONResponse:
        schema = (await json_body(request)).get("schema")
        if not isinstance(schema, dict):
            raise BadRequest("send {\"schema\": {...}} with a JSON schema object", "schema")
        from koboldtui.engine.json_grammar import schema_grammar

        return JSONResponse({"result": await schema_grammar(schema), "success": True})

    async def model(request: Request) -> JSONResponse:
        authorized = request.scope.get("state", {}).get("authorized", True)
        return JSONResponse({"result": model_id(runtime) if authorized else PROTECTED_MODEL})

    async def info_version(_: Request) -> JSONResponse:
        return JSONResponse({"result": KOBOLDAI_API_VERSION})

    async def extra_version(_: Request) -> JSONResponse:
        return JSONResponse({"result": "KoboldCpp", "version": KOBOLDCPP_COMPAT_VERSION,
                             "server": "koboldtui", "server_version": __version__,
                             "protected": bool(runtime.config.api_key), "txt2img": False,
                             "vision": False, "transcribe": False, "multiplayer": False,
                             "websearch": False, "tts": False, "embeddings": False,
                             "logprobs": True, "grammar": True, "ignored_fields": ignored_fields()})

    async def max_length(_: Request) -> JSONResponse:
        return JSONResponse({"value": DEFAULT_MAX_LENGTH})

    async def max_context_length(_: Request) -> JSONResponse:
        return JSONResponse({"value": runtime.require_engine().n_ctx_per_seq})

    async def perf(_: Request) -> JSONResponse:
        engine = runtime.require_engine()
        snap = engine.snapshot()
        last = runtime.last_result
        horde = runtime.horde_status()
        prompt_s = (last.first_token_at - last.queued_at) if last and last.first_token_at else 0.0
        eval_s = (last.finished_at - last.first_token_at) if last and last.first_token_at else 0.0
        idle = snap.slots_busy == 0 and snap.queue_depth == 0
        since = last.finished_at if last else None
        idletime = (time.monotonic() - since if since else time.time() - runtime.started_at) if idle else 0.0
        return JSONResponse({
            "last_process": round(prompt_s, 3),
            "last_eval": round(eval_s, 3),
            "last_token_count": last.completion_tokens if last else 0,
            "last_seed": last.seed if last else 0,
            "total_gens": snap.totals.completed,
            "stop_reason": _stop_reason_code(last) if last else -1,
            "total_img_gens": 0,
            "queue": snap.queue_depth,
            "idle": 1 if idle else 0,
            "hordeexitcounter": horde.get("jobs_faulted", 0) + horde.get("jobs_dropped", 0),
            "uptime": round(time.time() - runtime.started_at, 1),
            "idletime": round(idletime, 1),
            "quiet": False,
            "slots_busy": snap.slots_busy,
            "parallel": snap.parallel,
        })

    async def preloadstory(_: Request) -> JSONResponse:
        return JSONResponse({})  # no story is preloaded on this server

    async def soft_prompts_list(_: Request) -> JSONResponse:
        return JSONResponse({"values": []})

    async def soft_prompt(_: Request) -> JSONResponse:
        return JSONResponse({"value": ""})

    async def sd_models(_: Request) -> JSONResponse:
        return JSONResponse([])  # no image model here

    return [
        Route("/api/v1/generate", generate, methods=["POST"]),
        Route("/api/extra/generate/stream", generate_stream, methods=["POST"]),
        Route("/api/extra/generate/check", check, methods=["GET", "POST"]),
        Route("/api/extra/abort", abort, methods=["POST"]),
        Route("/api/extra/tokencount", tokencount, methods=["POST"]),
        Route("/api/extra/tokenize", tokencount, methods=["POST"]),
        Route("/api/extra/detokenize", detokenize, methods=["POST"]),
        Route("/api/extra/last_logprobs", last_logprobs, methods=["POST"]),
        Route("/api/extra/json_to_grammar", json_to_grammar, methods=["POST"]),
        Route("/api/v1/model", model),
        Route("/api/v1/info/version", info_version),
        Route("/api/extra/version", extra_version),
        Route("/api/v1/config/max_length", max_length),
        Route("/api/v1/config/max_context_length", max_context_length),
        Route("/api/extra/true_max_context_length", max_context_length),
        Route("/api/extra/perf", perf),
        Route("/api/extra/preloadstory", preloadstory),
        Route("/api/v1/config/soft_prompts_list", soft_prompts_list),
        Route("/api/v1/config/soft_prompt", soft_prompt),
        Route("/sdapi/v1/sd-models", sd_models),
    ]


def without_bos(engine: Any, ids: list[int]) -> list[int]:
    """The ids without the BOS the tokenizer adds: KoboldCpp's ``special: false`` (Lite's
    "logit bias from a string" would otherwise ban BOS). Special-token text in the prompt is
    still read as the special token, as KoboldCpp does."""
    vocab = getattr(engine, "vocab", None)
    if vocab is not None and vocab.add_bos and ids and ids[0] == vocab.bos:
        return ids[1:]
    return ids


def _stop_reason_code(result: GenerationResult) -> int:
    """KoboldCpp's stop_reason: 0 out of tokens, 1 EOS, 2 a custom stop sequence, -1 aborted/invalid."""
    if result.finish_reason is FinishReason.LENGTH:
        return 0
    if result.finish_reason is FinishReason.STOP:
        return 2 if result.stop_text else 1
    return -1


def _sse(data: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {json.dumps(data)}\n\n".encode()

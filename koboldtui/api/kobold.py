"""KoboldAI / KoboldCpp routes: /api/v1/* and /api/extra/*.

Field names, defaults and response shapes follow KoboldCpp so existing clients
(SillyTavern, KoboldAI Lite, the Horde bridge) work unchanged. Prompts longer than
``max_context_length - max_length`` are cut from the left, as KoboldCpp does.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from koboldtui import __version__
from koboldtui.api.disconnect import result_unless_disconnected
from koboldtui.api.validation import (
    BadRequest,
    get_bool,
    get_int,
    get_number,
    get_str,
    get_str_list,
    json_body,
)
from koboldtui.engine.types import FinishReason, GenerationRequest, Origin, SamplingParams
from koboldtui.runtime import Runtime

KOBOLDAI_API_VERSION = "1.2.5"
KOBOLDCPP_COMPAT_VERSION = "1.80"
DEFAULT_MAX_LENGTH = 100


def model_id(runtime: Runtime) -> str:
    """The name clients and the Horde see: koboldcpp/<gguf basename>."""
    return "koboldcpp/" + runtime.model_path.stem


def sampling_from_body(body: dict[str, Any]) -> SamplingParams:
    """KoboldAI sampler fields → SamplingParams; unknown fields are ignored."""
    d = SamplingParams()
    return SamplingParams(
        temperature=get_number(body, "temperature", d.temperature, lo=0, hi=100),
        top_p=get_number(body, "top_p", d.top_p, lo=0, hi=1),
        top_k=get_int(body, "top_k", d.top_k, lo=0, hi=1_000_000),
        min_p=get_number(body, "min_p", d.min_p, lo=0, hi=1),
        typical=get_number(body, "typical", d.typical, lo=0, hi=1),
        tfs=get_number(body, "tfs", d.tfs, lo=0, hi=1),
        top_a=get_number(body, "top_a", d.top_a, lo=0, hi=100),
        rep_pen=get_number(body, "rep_pen", d.rep_pen, lo=0.01, hi=100),
        rep_pen_range=get_int(body, "rep_pen_range", d.rep_pen_range, lo=-1, hi=1_000_000),
        presence_penalty=get_number(body, "presence_penalty", d.presence_penalty, lo=-100, hi=100),
        frequency_penalty=get_number(body, "frequency_penalty", d.frequency_penalty, lo=-100, hi=100),
        seed=get_int(body, "sampler_seed", d.seed, lo=-1, hi=2**32 - 1),
    )


def request_from_body(runtime: Runtime, body: dict[str, Any]) -> GenerationRequest:
    engine = runtime.require_engine()
    ctx = engine.n_ctx_per_seq
    hint = f" (this instance's context is {ctx} tokens: lower max_length)"
    prompt = get_str(body, "prompt", required=True)
    max_context = get_int(body, "max_context_length", ctx, lo=16, hi=10_000_000)
    max_length = get_int(body, "max_length", DEFAULT_MAX_LENGTH, lo=1, hi=ctx, hint=hint)
    genkey = get_str(body, "genkey", "")
    if genkey and len(genkey) > 128:
        raise BadRequest("'genkey' must be at most 128 characters", "genkey")
    fields: dict[str, Any] = {}
    if genkey:
        fields["genkey"] = genkey
    return GenerationRequest(
        prompt=prompt,
        max_tokens=max_length,
        sampling=sampling_from_body(body),
        stop=get_str_list(body, "stop_sequence"),
        ban_eos=get_bool(body, "ban_eos_token", False),
        origin=Origin.LOCAL,
        max_context=min(max_context, ctx),
        truncate_prompt=True,
        **fields,
    )


def kobold_finish(reason: FinishReason) -> str:
    """length / abort (aborted, or ended by a stopping instance) / stop."""
    return {FinishReason.LENGTH: "length", FinishReason.ABORT: "abort"}.get(reason, "stop")


def kobold_routes(runtime: Runtime) -> list[Route]:
    """All KoboldAI-compatible routes bound to one runtime."""

    async def generate(request: Request) -> JSONResponse:
        gen = request_from_body(runtime, await json_body(request))
        handle = runtime.submit(gen)
        result = await result_unless_disconnected(request, handle)
        if result.error:
            raise BadRequest(f"generation failed: {result.error}", status=500)
        return JSONResponse({"results": [{
            "text": result.text, "finish_reason": kobold_finish(result.finish_reason),
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
        }]})

    async def generate_stream(request: Request) -> StreamingResponse:
        gen = request_from_body(runtime, await json_body(request))
        handle = runtime.submit(gen)

        async def events() -> AsyncIterator[bytes]:
            try:
                async for piece in handle.stream():
                    yield _sse({"token": piece, "finish_reason": None})
                result = await handle.result()
                yield _sse({"token": "", "finish_reason": kobold_finish(result.finish_reason)})
            finally:
                handle.abort()  # no-op when done; frees the slot if the client went away

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _find_handle(genkey: str):
        return runtime.recent_handles.get(genkey) if genkey else runtime.latest_local_handle

    async def check(request: Request) -> JSONResponse:
        body = await json_body(request) if (await request.body()).strip() else {}
        genkey = get_str(body, "genkey", "")
        handle = _find_handle(genkey)
        return JSONResponse({"results": [{"text": handle.partial_text() if handle else ""}]})

    async def abort(request: Request) -> JSONResponse:
        body = await json_body(request) if (await request.body()).strip() else {}
        genkey = get_str(body, "genkey", "")
        engine = runtime.require_engine()
        if genkey:
            found = engine.abort(genkey)
        else:  # KoboldCpp single-user behaviour: abort the newest local request
            handle = runtime.latest_local_handle
            found = engine.abort(handle.genkey) if handle else False
        return JSONResponse({"success": found, "done": found})

    async def tokencount(request: Request) -> JSONResponse:
        body = await json_body(request)
        text = get_str(body, "prompt", required=True)
        ids = runtime.require_engine().tokenize(text)
        return JSONResponse({"value": len(ids), "ids": ids})

    async def model(_: Request) -> JSONResponse:
        return JSONResponse({"result": model_id(runtime)})

    async def info_version(_: Request) -> JSONResponse:
        return JSONResponse({"result": KOBOLDAI_API_VERSION})

    async def extra_version(_: Request) -> JSONResponse:
        return JSONResponse({"result": "KoboldCpp", "version": KOBOLDCPP_COMPAT_VERSION,
                             "server": "koboldtui", "server_version": __version__,
                             "protected": bool(runtime.config.api_key), "txt2img": False,
                             "vision": False, "transcribe": False, "multiplayer": False})

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
        return JSONResponse({
            "last_process": round(prompt_s, 3),
            "last_eval": round(eval_s, 3),
            "last_token_count": last.completion_tokens if last else 0,
            "last_seed": last.seed if last else 0,
            "total_gens": snap.totals.completed,
            "stop_reason": _stop_reason_code(last.finish_reason) if last else -1,
            "queue": snap.queue_depth,
            "idle": 1 if snap.slots_busy == 0 and snap.queue_depth == 0 else 0,
            "hordeexitcounter": horde.get("jobs_faulted", 0) + horde.get("jobs_dropped", 0),
            "uptime": round(time.time() - runtime.started_at, 1),
            "idletime": 0,
            "quiet": False,
            "slots_busy": snap.slots_busy,
            "parallel": snap.parallel,
        })

    return [
        Route("/api/v1/generate", generate, methods=["POST"]),
        Route("/api/extra/generate/stream", generate_stream, methods=["POST"]),
        Route("/api/extra/generate/check", check, methods=["GET", "POST"]),
        Route("/api/extra/abort", abort, methods=["POST"]),
        Route("/api/extra/tokencount", tokencount, methods=["POST"]),
        Route("/api/v1/model", model),
        Route("/api/v1/info/version", info_version),
        Route("/api/extra/version", extra_version),
        Route("/api/v1/config/max_length", max_length),
        Route("/api/v1/config/max_context_length", max_context_length),
        Route("/api/extra/true_max_context_length", max_context_length),
        Route("/api/extra/perf", perf),
    ]


def _stop_reason_code(reason: FinishReason) -> int:
    """KoboldCpp's stop_reason: 0 = out of tokens, 1 = EOS/stop, 2 = custom stop, -1 = invalid."""
    return {FinishReason.LENGTH: 0, FinishReason.STOP: 1}.get(reason, -1)


def _sse(data: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {json.dumps(data)}\n\n".encode()

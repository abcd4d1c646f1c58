"""Health, the instance status snapshot, and Prometheus metrics.

``/health`` is what supervisors poll (200 ready, 503 loading/failed); the status snapshot
is the one JSON the panel and the Horde worker read; ``/metrics`` is the Prometheus text
format, written by hand because it is a few lines and needs no extra dependency.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from koboldtui.runtime import Runtime


def status_routes(runtime: Runtime) -> list[Route]:
    async def health(_: Request) -> JSONResponse:
        body, code = runtime.health()  # 503 "wedged" when the decode thread stops beating
        return JSONResponse(body, status_code=code)

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(runtime.status().to_dict())

    async def metrics(_: Request) -> PlainTextResponse:
        snap = runtime.require_engine().snapshot()
        t = snap.totals
        horde = runtime.horde_status()
        lines = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP koboldtui_{name} {help_text}")
            lines.append(f"# TYPE koboldtui_{name} {kind}")
            for labels, value in samples:
                lines.append(f"koboldtui_{name}{labels} {value}")

        metric("requests_total", "counter", "Generation requests received.", [("", t.requests)])
        metric("requests_finished_total", "counter", "Requests finished, by outcome.", [
            ('{outcome="completed"}', t.completed), ('{outcome="aborted"}', t.aborted),
            ('{outcome="error"}', t.errors)])
        metric("generated_tokens_total", "counter", "Tokens generated.", [("", t.generated_tokens)])
        metric("prompt_tokens_total", "counter", "Prompt tokens processed.", [("", t.prompt_tokens)])
        metric("prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's cache.",
               [("", t.prompt_tokens_cached)])
        metric("context_shifts_total", "counter", "Times a slot's KV was shifted to drop old turns.",
               [("", t.context_shifts)])
        metric("prompts_shared_total", "counter", "OpenAI n choices that copied another choice's prompt KV.",
               [("", t.prompts_shared)])
        metric("queue_depth", "gauge", "Requests waiting for a slot.", [("", snap.queue_depth)])
        metric("slots_busy", "gauge", "Sequence slots in use.", [("", snap.slots_busy)])
        metric("slots_total", "gauge", "Sequence slots (parallel).", [("", snap.parallel)])
        metric("tokens_per_second", "gauge", "Aggregate generation speed, last 5 s.",
               [("", t.last_tokens_per_s)])
        metric("n_batch", "gauge", "BLAS batch size.", [("", snap.n_batch)])
        metric("n_ubatch", "gauge", "Micro-batch size.", [("", snap.n_ubatch)])
        metric("local_window_remaining_seconds", "gauge", "Seconds left in the local-priority window.",
               [("", horde.get("remaining_s", 0.0))])
        metric("horde_jobs_total", "counter", "Horde jobs by outcome.", [
            ('{outcome="done"}', horde.get("jobs_done", 0)),
            ('{outcome="faulted"}', horde.get("jobs_faulted", 0)),
            ('{outcome="dropped"}', horde.get("jobs_dropped", 0))])
        metric("horde_kudos_session", "gauge", "Kudos earned this session.",
               [("", horde.get("kudos_session", 0.0))])
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return [
        Route("/health", health),
        Route("/api/koboldtui/status", status),
        Route("/metrics", metrics),
    ]

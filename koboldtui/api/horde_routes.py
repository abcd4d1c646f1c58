"""HTTP control of the Horde worker (start, stop, maintenance), so the panel can steer it.

``horde_routes(get_worker)`` returns Starlette routes; ``get_worker()`` gives the
instance's ``HordeWorker`` or None when the instance runs none. Every error is JSON
``{"error": words that say what to do}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from koboldtui.api.validation import json_body
from koboldtui.horde.errors import HordeError
from koboldtui.horde.worker import HordeWorker, HordeWorkerStateError

NO_WORKER = (
    "this instance runs no Horde worker: restart it with --horde --horde-name NAME "
    "and the key in KOBOLDTUI_HORDE_KEY (or --horde-key)"
)


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any]:
    """The body as an object ({} when empty); bad JSON raises BadRequest (a JSON 400)."""
    if not (await request.body()).strip():
        return {}
    return await json_body(request)


def horde_routes(get_worker: Callable[[], HordeWorker | None]) -> list[Route]:
    """Routes POST /api/koboldtui/horde/{start,stop,maintenance} for the app to mount."""

    async def start(request: Request) -> JSONResponse:
        worker = get_worker()
        if worker is None:
            return _error(409, NO_WORKER)
        try:
            await worker.start()
        except HordeWorkerStateError as exc:
            return _error(409, str(exc))
        return JSONResponse({"ok": True, "horde": worker.status()})

    async def stop(request: Request) -> JSONResponse:
        worker = get_worker()
        if worker is None:
            return _error(409, NO_WORKER)
        body = await _json_body(request)
        force = body.get("force", False)
        if not isinstance(force, bool):
            return _error(400, "'force' must be true or false")
        summary = await worker.stop(force=force, wait=False)
        return JSONResponse({"ok": True, **summary, "horde": worker.status()})

    async def maintenance(request: Request) -> JSONResponse:
        worker = get_worker()
        if worker is None:
            return _error(409, NO_WORKER)
        body = await _json_body(request)
        on, message = body.get("on"), body.get("message", "")
        if not isinstance(on, bool):
            return _error(
                400, 'send {"on": true|false, "message": "why"} to enter or clear maintenance'
            )
        if not isinstance(message, str):
            return _error(400, "'message' must be a string")
        try:
            await worker.set_maintenance(on, message)
        except HordeWorkerStateError as exc:
            return _error(409, str(exc))
        except HordeError as exc:  # advice = found here before asking (e.g. an unsendable key)
            prefix = "" if exc.advice else "the Horde refused the maintenance change: "
            return _error(502, prefix + exc.explain())
        return JSONResponse({"ok": True, "horde": worker.status()})

    return [
        Route("/api/koboldtui/horde/start", start, methods=["POST"]),
        Route("/api/koboldtui/horde/stop", stop, methods=["POST"]),
        Route("/api/koboldtui/horde/maintenance", maintenance, methods=["POST"]),
    ]

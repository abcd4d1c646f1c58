"""KoboldCpp's admin routes, so the model switchers in KoboldAI Lite and SillyTavern switch the box's current model.

KoboldCpp's shapes: ``GET /api/admin/list_options`` is a JSON list of names (its config
files, then ``"initial_model"`` and ``"unload_model"``), and ``[]`` when the caller may
not use it; ``POST /api/admin/reload_config {"filename": NAME}`` answers
``{"success": true}`` or ``{"success": false}``. The password rule is KoboldCpp's: with an
admin password set, ``Authorization: Bearer PASSWORD`` must carry it; without one,
anyone who can reach the gateway may switch. Here the names are the gateway's model names
(instances and pools); ``initial_model`` means the first one, ``unload_model`` is accepted
and changes nothing (the gateway stops idle instances by their TTL instead).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INITIAL, UNLOAD = "initial_model", "unload_model"


def password_ok(request: Request, password: str | None) -> bool:
    """KoboldCpp's ``check_header_password``: no password set → allowed; else the Bearer must match."""
    if not password:
        return True
    given = request.headers.get("authorization", "")
    token = given[len("Bearer "):].strip() if given.startswith("Bearer ") else ""
    return bool(token) and hmac.compare_digest(token.encode(), password.encode())


def admin_routes(names: Callable[[], list[str]], switch: Callable[[str], None],
                 password: str | None) -> list[Route]:
    """The two routes; ``names`` lists the model names, ``switch`` makes one current."""

    async def list_options(request: Request) -> JSONResponse:
        if not password_ok(request, password):
            return JSONResponse([])
        return JSONResponse(names() + [INITIAL, UNLOAD])

    async def reload_config(request: Request) -> JSONResponse:
        if not password_ok(request, password):
            return JSONResponse({"success": False, "error": "wrong or missing admin password: send "
                                 "'Authorization: Bearer PASSWORD'"}, status_code=401)
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            body = {}
        target = body.get("filename") if isinstance(body, dict) else None
        known = names()
        if target == UNLOAD:
            return JSONResponse({"success": True})
        if target == INITIAL and known:
            target = known[0]
        if not isinstance(target, str) or target not in known:
            return JSONResponse({"success": False, "error": f"no model named {target!r} on this box; "
                                 f"models: {', '.join(known) or 'none saved'}"})
        await asyncio.to_thread(switch, target)  # a SQLite write: never on the event loop
        return JSONResponse({"success": True})

    return [Route("/api/admin/list_options", list_options, methods=["GET"]),
            Route("/api/admin/reload_config", reload_config, methods=["POST"])]

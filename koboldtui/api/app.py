"""The ASGI app of one instance: routes, auth, and errors that always come back as JSON.

Bad input is a 4xx that says what to fix; an unexpected failure is a JSON 500 and the
server keeps serving. The model loads in the background after the port is open, so
supervisors can watch ``/health`` go from 503 "loading" to 200.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from koboldtui.api.body_limit import BodyLimit
from koboldtui.api.browser_guard import BrowserGuard, BrowserPolicy
from koboldtui.api.kobold import kobold_routes
from koboldtui.api.openai_routes import openai_routes
from koboldtui.api.route_aliases import RouteAliases
from koboldtui.api.status_routes import status_routes
from koboldtui.api.validation import BadRequest
from koboldtui.engine.types import EngineError, PromptTooLongError, QueueFullError
from koboldtui.runtime import Runtime

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/health"})
# Readable without the key, as in KoboldCpp's protected mode, so a client can see that one is
# needed (/api/v1/model then names no model: see kobold.py).
DISCOVERY_PATHS = frozenset({"/api/v1/model", "/api/extra/version", "/api/v1/info/version"})


def error_response(request: Request, status: int, message: str, *, kind: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """OpenAI's error shape on /v1, KoboldCpp's elsewhere; both carry the message in words."""
    if request.url.path.startswith("/v1/"):
        body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    else:
        body = {"error": message, "detail": {"msg": message, "type": kind}}
        if param:
            body["detail"]["param"] = param
    return JSONResponse(body, status_code=status, headers=headers)


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadRequest)
    return error_response(request, exc.status, exc.message, param=exc.param, code=exc.code)


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    if isinstance(exc, PromptTooLongError):
        return error_response(request, 400, str(exc), param="messages" if "chat" in request.url.path
                              else "prompt", code="context_length_exceeded")
    if isinstance(exc, QueueFullError):
        return error_response(request, 503, str(exc), kind="service_unavailable", headers={"Retry-After": "5"})
    kind = "server_unavailable" if exc.status >= 500 else "invalid_request_error"
    return error_response(request, exc.status, str(exc), kind=kind,
                          headers={"Retry-After": "5"} if exc.status == 503 else None)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = {404: f"no route {request.url.path}: see the README for the API",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    return error_response(request, exc.status_code, message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return error_response(request, 500, f"internal error: {exc}", kind="server_error")


def json_error_handlers() -> dict[Any, Any]:
    """Starlette exception handlers that turn every error into the JSON shapes above."""
    return {BadRequest: _bad_request, EngineError: _engine_error, HTTPException: _http_error,
            Exception: _unexpected}


class BearerAuth:
    """With --api-key, every route but /health needs ``Authorization: Bearer KEY``."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.api_key or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        token = given[7:].strip() if given.lower().startswith("bearer ") else ""
        authorized = bool(token) and hmac.compare_digest(token.encode(), self.api_key.encode())
        scope.setdefault("state", {})["authorized"] = authorized
        if authorized or (scope["path"] in DISCOVERY_PATHS and scope["method"] == "GET"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        message = ("missing or wrong API key: send 'Authorization: Bearer <key>' with the key "
                   "this instance was started with (--api-key)")
        response = error_response(request, 401, message, kind="authentication_error",
                                  code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


def browser_policy(runtime: Runtime) -> BrowserPolicy:
    """The instance's browser rules (browser_guard.py) from its config."""
    config = runtime.config
    return BrowserPolicy(listen_host=config.host, allow_hosts=tuple(config.allow_hosts),
                         allow_origins=tuple(config.allow_origins), has_key=bool(config.api_key))


def build_app(runtime: Runtime, *, load_on_startup: bool = True) -> Starlette:
    """The Starlette app for ``runtime``; with ``load_on_startup`` the model loads in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if load_on_startup and runtime.engine is None:
            runtime.start_loading()
        try:
            yield
        finally:
            await runtime.shutdown()  # cancels a load still in progress

    from koboldtui.api.horde_routes import horde_routes

    routes = status_routes(runtime) + kobold_routes(runtime) + openai_routes(runtime)
    routes += horde_routes(lambda: runtime.horde_worker)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=json_error_handlers(),
    )
    # Outermost last: aliases → browser guard → CORS (answers preflights) → body limit → key check → routes.
    app.add_middleware(BearerAuth, api_key=runtime.config.api_key)
    app.add_middleware(BodyLimit)  # a too-large body is refused before auth or a route reads it
    policy = browser_policy(runtime)
    app.add_middleware(CORSMiddleware, **policy.cors_options())
    app.add_middleware(BrowserGuard, policy=policy, refuse=error_response)
    app.add_middleware(RouteAliases)
    app.state.runtime = runtime
    return app

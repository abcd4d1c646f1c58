"""The gateway's ASGI app: every route an instance speaks, forwarded; the same guards as an instance.

The middleware are api/'s own modules (route aliases, browser guard, CORS, body limit,
key check), stacked in the same order, so a client cannot tell the gateway from an
instance except that it answers for every model on the box.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from koboldtui.api.app import BearerAuth, error_response, json_error_handlers
from koboldtui.api.body_limit import BodyLimit
from koboldtui.api.browser_guard import BrowserGuard, BrowserPolicy
from koboldtui.api.route_aliases import RouteAliases
from koboldtui.gateway.admin_routes import admin_routes
from koboldtui.gateway.service import Gateway

STATUS_PATH = "/api/koboldtui/gateway"  # a control route: the browser guard refuses foreign pages
GENKEY_PATHS = frozenset({"/api/extra/generate/check", "/api/extra/abort", "/api/extra/last_logprobs"})
DISCOVERY = frozenset({"/api/v1/model", "/api/extra/version"})
METHODS = ["GET", "POST"]


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens and who may use it (as an instance's ServeConfig)."""

    host: str = "127.0.0.1"
    port: int = 5000
    api_key: str | None = None
    admin_password: str | None = None  # KoboldCpp's --adminpassword; with an api key, the key
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ("*",)
    watch: bool = True  # run the watcher and TTL loops (tests may drive them by hand)


def build_gateway_app(gateway: Gateway, config: GatewayConfig) -> Starlette:
    """The Starlette app for ``gateway``; its lifespan runs the watcher and the TTL reaper."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        await asyncio.to_thread(gateway.table.refresh)
        await gateway.watcher.look_all()
        if config.watch:
            tasks = [asyncio.create_task(gateway.watcher.run()), asyncio.create_task(gateway.keep_watching()),
                     asyncio.create_task(gateway.on_demand.run_reaper())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await gateway.forwarder.client.aclose()

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "gateway": True})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse(gateway.models())

    async def model(request: Request) -> Response:
        wanted = request.path_params["model"]
        for entry in gateway.models()["data"]:
            if entry["id"] == wanted:
                return JSONResponse(entry)
        return gateway.unknown(request, wanted)

    async def status(_: Request) -> JSONResponse:
        return JSONResponse(gateway.status())

    async def metrics(_: Request) -> PlainTextResponse:
        counts = gateway.on_demand.counts
        text = gateway.metrics.prometheus({"starts_total": counts.starts, "start_failures_total":
                                           counts.start_failures, "ttl_stops_total": counts.ttl_stops,
                                           "room_stops_total": counts.room_stops})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def forward(request: Request) -> Response:
        path = request.url.path
        if path in DISCOVERY and request.method == "GET":
            return await gateway.discovery(request, path)
        if path in GENKEY_PATHS:
            return await gateway.by_genkey(request, path)
        return await gateway.handle(request, path)

    def switch(name: str) -> None:
        gateway.current.set(name)

    password = config.api_key or config.admin_password
    routes = [Route("/health", health), Route("/v1/models", models), Route("/v1/models/{model:path}", model),
              Route(STATUS_PATH, status), Route("/metrics", metrics)]
    routes += admin_routes(gateway.table.known_names, switch, password)
    routes += [Route("/v1/{rest:path}", forward, methods=METHODS),
               Route("/api/{rest:path}", forward, methods=METHODS),
               Route("/sdapi/{rest:path}", forward, methods=METHODS)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=json_error_handlers())
    app.add_middleware(BearerAuth, api_key=config.api_key)
    app.add_middleware(BodyLimit)
    policy = BrowserPolicy(listen_host=config.host, allow_hosts=config.allow_hosts,
                           allow_origins=config.allow_origins, has_key=bool(config.api_key))
    app.add_middleware(CORSMiddleware, **policy.cors_options())
    app.add_middleware(BrowserGuard, policy=policy, refuse=error_response)
    app.add_middleware(RouteAliases)
    app.state.gateway = gateway
    return app

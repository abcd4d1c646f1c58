"""Paths KoboldCpp answers under more than one name, mapped onto the one route we register.

KoboldCpp matches routes by suffix, so clients call ``/api/latest/*`` for ``/api/v1/*``,
``/v1/completion`` for ``/v1/completions`` and add trailing slashes freely; Starlette would
answer 404 or a 307 redirect that some clients do not follow (and a redirected POST loses
its body in some). Rewriting the path before routing keeps one handler per route.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX_ALIASES = (("/api/latest/", "/api/v1/"),)
EXACT_ALIASES = {"/v1/completion": "/v1/completions", "/api/latest/generate": "/api/v1/generate"}


def canonical_path(path: str) -> str:
    """The registered path a client's path means: no trailing slash, aliases resolved."""
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    for alias, target in PREFIX_ALIASES:
        if path.startswith(alias):
            path = target + path[len(alias):]
    return EXACT_ALIASES.get(path, path)


class RouteAliases:
    """ASGI middleware that rewrites ``scope['path']`` to its canonical form."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = canonical_path(scope["path"])
            if path != scope["path"]:
                scope = dict(scope, path=path, raw_path=path.encode())
        await self.app(scope, receive, send)

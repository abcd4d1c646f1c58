"""What a web page in the user's browser may do with this server, decided before any route runs.

A local server is reachable from every page the user visits. Three rules keep a page from
abusing it while KoboldAI Lite on another origin still works (see README "Browsers"):

- **Host check** (DNS rebinding): a ``Host`` header that is not the address we listen on,
  a loopback name, or a name the user allowed (``--allow-host``) is refused. Starlette's
  ``TrustedHostMiddleware`` is not used because it cuts ``[::1]:5001`` at the first colon.
- **Control routes** (``/api/koboldtui/*``: Horde start/stop/maintenance, status) never
  answer a cross-origin browser request unless the instance has an API key.
- **JSON bodies from other origins**: a page on another origin can send ``text/plain``, a
  form, or a body without a type as a "simple request", with no CORS preflight; such a
  request (a foreign ``Origin``, or ``Sec-Fetch-Site: cross-site``/``same-site``) is refused
  with 415 unless its type is JSON. A request with neither header is no browser's
  cross-site request (curl, ``requests``, urllib): it is read as JSON whatever its type
  says, as KoboldCpp reads every body.

Cross-origin access to the client API itself (KoboldAI and OpenAI routes) is Starlette's
``CORSMiddleware``, configured from the same policy by ``cors_options``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

CONTROL_PREFIX = "/api/koboldtui/"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "*"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY = "*"


def host_name(host_header: str) -> str:
    """The name in a Host header without port or IPv6 brackets, lower-cased: '[::1]:5001' → '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def is_json_type(content_type: str) -> bool:
    """application/json or any ``+json`` type, parameters (charset) ignored."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


@dataclass(frozen=True)
class BrowserPolicy:
    """Which Host names and browser origins this instance answers; built from ServeConfig."""

    listen_host: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = (ANY,)
    has_key: bool = False

    def host_allowed(self, host_header: str | None) -> bool:
        """True for our own address, loopback names and ``--allow-host`` names (``*.lan`` works)."""
        if host_header is None:  # HTTP/1.0 clients may send none; browsers always do
            return True
        name = host_name(host_header)
        listen = host_name(self.listen_host)
        if name in LOOPBACK_NAMES or name == listen:
            return True
        # Bound to every interface: any name may reach us, and validate() made a key mandatory.
        if listen in WILDCARD_BINDS:
            return True
        return any(pattern == ANY or fnmatch.fnmatchcase(name, pattern.lower()) for pattern in self.allow_hosts)

    def origin_allowed(self, origin: str) -> bool:
        """May a page from ``origin`` call the client API (generate, models, tokenize...)?"""
        return ANY in self.allow_origins or origin.rstrip("/") in {o.rstrip("/") for o in self.allow_origins}

    def cors_options(self) -> dict[str, Any]:
        """Keyword arguments for Starlette's CORSMiddleware matching this policy."""
        origins = [ANY] if ANY in self.allow_origins else list(self.allow_origins)
        return {"allow_origins": origins, "allow_methods": ["GET", "POST", "OPTIONS"],
                "allow_headers": ["*"], "allow_credentials": False, "max_age": 600}


Refuse = Callable[..., Any]  # error_response(request, status, message, kind=..., code=...)


class BrowserGuard:
    """ASGI middleware applying the module's three rules; refusals are JSON in the route's shape."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy, refuse: Refuse) -> None:
        self.app, self.policy, self.refuse = app, policy, refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.check(scope)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message, code = problem
        response = self.refuse(Request(scope, receive), status, message, kind="forbidden"
                               if status == 403 else "invalid_request_error", code=code)
        await response(scope, receive, send)

    def check(self, scope: Scope) -> tuple[int, str, str] | None:
        """(status, message, code) when the request must be refused, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host")
        if not self.policy.host_allowed(host):
            message = (f"Host '{host}' is not an address of this server (a DNS-rebinding page "
                       "would look like this): use http://127.0.0.1:PORT, or start the instance with "
                       f"--allow-host {host_name(host or '')} if that name is really yours")
            return 403, message, "host_not_allowed"
        origin = headers.get("origin")
        path: str = scope["path"]
        foreign = origin is not None and not self._same_origin(origin, host, scope)
        site = headers.get("sec-fetch-site", "")
        cross_site = foreign or site in ("cross-site", "same-site")  # a page on another origin
        if path.startswith(CONTROL_PREFIX) and not self.policy.has_key:
            if cross_site:
                message = (f"{path} controls this instance and does not answer web pages from other "
                           f"origins ({origin or site}) unless the instance has an API key: start it "
                           "with --api-key KEY and send 'Authorization: Bearer KEY'")
                return 403, message, "cross_origin_control"
        elif foreign and not self.policy.origin_allowed(origin or ""):
            message = (f"web pages from {origin} may not use this server: start it with "
                       f"--allow-origin {origin} to allow them")
            return 403, message, "origin_not_allowed"
        if scope["method"] in BODY_METHODS and cross_site:
            content_type = headers.get("content-type")
            has_body = headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in headers
            if (content_type is not None and not is_json_type(content_type)) or (content_type is None and has_body):
                message = ("a web page on another origin must send the body as JSON with "
                           f"'Content-Type: application/json' (got {content_type or 'no Content-Type'}): "
                           "other types are a request any page could send without asking")
                return 415, message, "unsupported_media_type"
        return None

    @staticmethod
    def _same_origin(origin: str, host: str | None, scope: Scope) -> bool:
        scheme = scope.get("scheme", "http")
        return host is not None and origin.rstrip("/").lower() == f"{scheme}://{host}".lower()

"""Request bodies are limited while they arrive, not after: a 300 MB POST must never sit in memory.

``BodyLimit`` (ASGI middleware) answers 413 at once when ``Content-Length`` is over the
limit, and otherwise counts the bytes as the app reads them, failing the read the moment
they pass the limit. A client that goes away mid-upload costs one log line, not a
traceback: nobody is left to answer.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from koboldtui.api.validation import MAX_BODY_BYTES, BadRequest

log = logging.getLogger(__name__)


def too_large(size: str) -> str:
    """The words of a 413."""
    return f"request body is {size}; the limit is {MAX_BODY_BYTES} bytes: send a smaller request"


class BodyLimit:
    """Reject bodies over ``max_bytes`` before they are buffered; quiet on mid-upload disconnects."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send, too_large(f"{int(declared)} bytes"))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BadRequest(too_large(f"over {received} bytes"), status=413)
            return message

        try:
            await self.app(scope, counted, send)
        except ClientDisconnect:
            if scope.get("state", {}).get("koboldtui.given_up"):
                return  # the server closed it (a stalled body) and logged why (header_timeout.py)
            log.info("client %s went away while sending its request to %s",
                     _client(scope), scope.get("path"))

    @staticmethod
    async def _refuse(scope: Scope, send: Send, message: str) -> None:
        path = scope.get("path", "")
        if path.startswith("/v1/"):
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                              "code": "request_too_large"}}
        else:
            body = {"error": message, "detail": {"msg": message, "type": "invalid_request_error"}}
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": raw})


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"

"""Forward one request to one instance: bytes in, bytes out, SSE relayed event by event.

The instance does the work and speaks the client's protocol already, so nothing is
parsed on the way back except where a fault must be told: an instance that dies while
streaming ends the client's stream at once with an error event in the client's shape; a
client that leaves closes the upstream connection, which aborts the generation there
(an instance treats a closed connection as an abort, streamed or not).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from koboldtui.gateway.backends import Backend
from koboldtui.gateway.watcher import auth_headers

T = TypeVar("T")
# never forwarded: per-hop, the body length (recomputed), and the client's key (the gateway's own)
HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "proxy-authenticate", "host", "content-length",
                         "authorization", "origin", "accept-encoding"})
RESPONSE_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                           "content-encoding", "server", "date", "access-control-allow-origin",
                           "access-control-allow-credentials", "access-control-expose-headers", "vary"})


class UpstreamFailed(Exception):
    """The instance gave nothing back (refused, reset, timed out before answering): safe to retry."""

    def __init__(self, backend: Backend, cause: Exception) -> None:
        super().__init__(f"{backend.name} ({backend.base_url}) failed before answering: "
                         f"{type(cause).__name__}: {cause}")
        self.backend = backend


class ClientLeft(Exception):
    """The client disconnected while we waited for the instance."""


def forward_headers(request: Request, backend: Backend) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
    headers.update(auth_headers(backend))
    return headers


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in RESPONSE_DROP}


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (closing the upstream request)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientLeft()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def stream_fault(path: str, message: str) -> bytes:
    """The last SSE bytes a client gets when its instance died mid-stream, in its protocol."""
    if path.startswith("/v1/"):
        chunk = {"id": "gateway-error", "object": "chat.completion.chunk" if "chat" in path else "text_completion",
                 "choices": [{"index": 0, "delta": {} if "chat" in path else None, "text": "",
                              "finish_reason": "error"}]}
        if "chat" in path:
            chunk["choices"][0].pop("text")
        else:
            chunk["choices"][0].pop("delta")
        error = {"error": {"message": message, "type": "server_error", "param": None, "code": "instance_died"}}
        return (f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(error)}\n\ndata: [DONE]\n\n").encode()
    data = {"token": "", "finish_reason": "error", "error": message}
    return f"event: message\ndata: {json.dumps(data)}\n\n".encode()


class Forwarder:
    """Sends requests to instances on one shared ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def open(self, request: Request, backend: Backend, path: str, body: bytes) -> httpx.Response:
        """Send the request and wait for the instance's status line (the body is not read yet)."""
        url = backend.base_url + path
        if request.url.query:
            url += "?" + request.url.query
        upstream_request = self.client.build_request(request.method, url, content=body or None,
                                                     headers=forward_headers(request, backend))
        try:
            return await unless_disconnected(request, self.client.send(upstream_request, stream=True))
        except httpx.HTTPError as exc:
            raise UpstreamFailed(backend, exc) from exc

    async def read_whole(self, request: Request, backend: Backend, upstream: httpx.Response) -> Response:
        """A plain (non-SSE) answer, read whole; a client that leaves meanwhile aborts it upstream."""
        try:
            content = await unless_disconnected(request, upstream.aread())
        except httpx.HTTPError as exc:
            raise UpstreamFailed(backend, exc) from exc
        finally:
            await upstream.aclose()
        return Response(content, status_code=upstream.status_code, headers=response_headers(upstream))

    def relay(self, path: str, backend: Backend, upstream: httpx.Response,
              on_fault: Callable[[Backend, str], None], on_done: Callable[[], None]) -> StreamingResponse:
        """An SSE answer passed through chunk by chunk as the instance sends it."""

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                message = (f"instance {backend.name!r} stopped answering mid-stream "
                           f"({type(exc).__name__}); the answer is incomplete")
                on_fault(backend, message)
                yield stream_fault(path, message)
            finally:
                on_done()  # first: a cancelled aclose below must not skip it (nor the background task)
                await upstream.aclose()  # a client that left closes the upstream: the instance aborts

        return StreamingResponse(chunks(), status_code=upstream.status_code,
                                 headers=response_headers(upstream), background=BackgroundTask(on_done))


def is_stream(upstream: httpx.Response) -> bool:
    return upstream.headers.get("content-type", "").startswith("text/event-stream")


def json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a dict for routing (model, prompt); {} when it is not a JSON object."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}

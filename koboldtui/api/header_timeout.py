"""uvicorn's h11 protocol with deadlines for request headers and bodies, a real header-size
cap, and room kept under the descriptor limit, so half-sent requests cannot hold an instance.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) and bounds an
*incomplete* header (``h11_max_incomplete_event_size``), but a client that sends its
headers a byte at a time, or its headers and then part of a body, is waited for forever,
and a 100 KB header that arrives in one piece is accepted. Here:

- every request's headers must be complete within ``HEADER_TIMEOUT_S`` of the connection
  (or of their first byte on a kept-alive connection), else the connection is closed;
- a body may pause at most ``BODY_IDLE_S`` between bytes and must be complete within
  ``BODY_TOTAL_S`` of its headers, else the client gets a 408 and the connection closes
  (the route reading it sees a disconnect);
- request headers over ``MAX_HEADER_BYTES`` get a 431 whatever way they arrive;
- when new connections would pass the descriptor limit, the one that has waited longest
  for its client is closed (``fd_pressure.ConnectionRoom``), so /health still gets in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from koboldtui.api.fd_pressure import ConnectionRoom

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
BODY_IDLE_S = 10.0  # the longest pause between two pieces of a request body
BODY_TOTAL_S = 120.0  # the longest a whole body may take (8 MiB at 70 KB/s)
KEEP_ALIVE_S = 5.0  # uvicorn's timeout_keep_alive, set explicitly in serve
MAX_HEADER_BYTES = 16 * 1024  # also uvicorn's h11_max_incomplete_event_size, set explicitly in serve

ROOM = ConnectionRoom()  # one per process: the descriptor limit is the process's
GIVEN_UP = "koboldtui.given_up"  # scope["state"] flag: the server closed this request, it was logged here


class QuietLog:
    """One INFO line per kind of closed connection every ``every_s``, with how many more since:
    a flood of stalled clients costs a few lines, not one per client."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._more: dict[str, int] = {}

    def note(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -float("inf")) < self.every_s:
            self._more[kind] = self._more.get(kind, 0) + 1
            return
        more = self._more.pop(kind, 0)
        log.info(message + (f" (and {more} more like it in the last {self.every_s:.0f} s)" if more else ""), *args)
        self._last[kind] = now


QUIET = QuietLog()


class HeaderTimeoutH11Protocol(H11Protocol):
    """H11Protocol that closes connections whose request headers or body take too long."""

    header_timeout_s = HEADER_TIMEOUT_S
    body_idle_s = BODY_IDLE_S
    body_total_s = BODY_TOTAL_S
    max_header_bytes = MAX_HEADER_BYTES
    room: ConnectionRoom = ROOM

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_began: float | None = None
        self._waiting_since: float | None = self.loop.time()
        self._arm_header_timer()
        self.room.admit(self, self.connections)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            if self._header_timer is None:
                self._arm_header_timer()  # the next request on a kept-alive connection begins
                self._waiting_since = self.loop.time()
            if self._header_too_big(data):
                return
        super().data_received(data)
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._cancel_header_timer()  # headers complete
        if state is h11.SEND_BODY:
            self._arm_body_timer()  # re-armed by every piece: the deadline is for silence
        else:
            self._cancel_body_timer()
            if state is not h11.IDLE:
                self._waiting_since = None  # the whole request is in: it is being served

    def on_response_complete(self) -> None:
        self._waiting_since = self.loop.time()  # kept alive: it waits for its client again
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    # -- what the ConnectionRoom asks --
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def waiting_since(self) -> float | None:
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and self._waiting_since is not None:
            return self._waiting_since
        return None

    def shed(self) -> None:
        if self.conn.their_state is h11.SEND_BODY:
            self._answer_and_close(408, "the server is out of connections and this request's body "
                                   "stopped arriving: send it again, whole")
        elif not self.transport.is_closing():
            self.transport.close()

    # -- headers --
    def _header_too_big(self, data: bytes) -> bool:
        pending = self.conn.trailing_data[0] + data[: self.max_header_bytes + 4]
        head = pending[: self.max_header_bytes + 4]
        if len(pending) <= self.max_header_bytes or b"\r\n\r\n" in head:
            return False
        QUIET.note("431", "refused a request from %s: its headers pass %d bytes (431)", _peer(self.client),
                   self.max_header_bytes)
        self._answer_and_close(431, f"the request headers are over {self.max_header_bytes // 1024} KiB: "
                               "send fewer or shorter headers (cookies?)")
        return True

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            QUIET.note("headers", "closed a connection from %s: its request headers did not arrive "
                       "within %.0f s", _peer(self.client), self.header_timeout_s)
            self.transport.close()

    # -- body --
    def _arm_body_timer(self) -> None:
        now = self.loop.time()
        if self._body_began is None:
            self._body_began = now
        self._cancel_body_timer()
        delay = min(self.body_idle_s, self._body_began + self.body_total_s - now)
        self._body_timer = self.loop.call_later(max(0.0, delay), self._body_too_slow)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY:
            self._body_began = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.flow.read_paused and self.loop.time() - (self._body_began or 0) < self.body_total_s:
            self._arm_body_timer()  # we stopped reading (the app is busy): not the client's fault
            return
        QUIET.note("body", "closed a connection from %s: its request body stopped arriving (408)",
                   _peer(self.client))
        self._answer_and_close(408, f"the request body stopped arriving (no byte for {self.body_idle_s:.0f} s, "
                               f"or not whole within {self.body_total_s:.0f} s): send it again, whole")

    # -- giving up on a request --
    def _answer_and_close(self, status: int, message: str) -> None:
        """Answer ``status`` if nothing was answered yet, end the app's wait, close."""
        cycle = self.cycle
        # a request whose answer has begun (or ended: a route may answer without reading the
        # body) gets nothing more on the wire, just the close
        answered = cycle is not None and cycle.response_started and self.conn.their_state is not h11.IDLE
        if not answered and not self.transport.is_closing():
            body = json.dumps({"error": message, "detail": {"msg": message, "type": "invalid_request_error"}}).encode()
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}.get(status, b"Error")
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        if cycle is not None and not cycle.response_complete:
            cycle.scope.setdefault("state", {})[GIVEN_UP] = True  # said here, not again by BodyLimit
            cycle.disconnected = True  # the route's receive() says http.disconnect; its answer goes nowhere
            cycle.message_event.set()
        self.transport.close()


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"

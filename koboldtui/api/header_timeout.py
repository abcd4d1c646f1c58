"""uvicorn's h11 protocol with a deadline for request headers, so a half-sent request cannot
hold a connection for minutes.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) and bounds the
header size (``h11_max_incomplete_event_size``), but a client that opens a connection and
sends its headers a byte at a time is waited for forever. Here every request's headers
must be complete within ``HEADER_TIMEOUT_S`` of the connection (or of their first byte on
a kept-alive connection); otherwise the connection is closed with one log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5.0  # uvicorn's timeout_keep_alive, set explicitly in serve
MAX_HEADER_BYTES = 16 * 1024  # uvicorn's h11_max_incomplete_event_size, set explicitly in serve


class HeaderTimeoutH11Protocol(H11Protocol):
    """H11Protocol that closes connections whose request headers take too long."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # the next request on a kept-alive connection begins
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_timer()  # headers complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("closed a connection from %s: its request headers did not arrive within "
                     "%.0f s", _peer(self.client), self.header_timeout_s)
            self.transport.close()


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"

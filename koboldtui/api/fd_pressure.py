"""Running out of file descriptors: keep answering /health, and keep the log small.

Each connection holds a descriptor. Clients that connect and then stall (headers or a
body that never finish) used to pile up until ``accept()`` failed with EMFILE: new
connections — the supervisor's /health probe among them — were refused, so the watchdog
would kill a healthy instance, and asyncio logged "socket.accept() out of system
resource" with a traceback on every retry (170 MB in 13 s).

Two guards: ``ConnectionRoom`` keeps the open connections below the process's descriptor
limit by closing, when a new one arrives and the room is full, the connection that has
waited longest for its client (request headers or body not yet complete; never one
whose request is being served). ``AcceptErrorLog`` is an event-loop exception handler
that turns repeated accept failures into one line every ``every_s`` seconds with a count.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)

RESERVED_FDS = 64  # the model file, logs, the Horde client's sockets, pipes, threads: beyond the fds open at start
ACCEPT_MESSAGE = "socket.accept() out of system resource"


class WaitingConnection(Protocol):
    """What the room needs to know of a connection (the HTTP protocol object)."""

    def waiting_since(self) -> float | None:
        """When it began waiting for its client (None while a request is being served)."""
        ...

    def closing(self) -> bool:
        """True once it is being closed (it still counts until the loop reports it lost)."""
        ...

    def shed(self) -> None:
        """Close it, answering 408 where a request was begun."""
        ...


def descriptor_room(open_now: int | None = None, soft_limit: int | None = None) -> int:
    """How many connections fit under the soft RLIMIT_NOFILE, past the fds already open."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit == resource.RLIM_INFINITY:
            soft_limit = 1 << 20
    if open_now is None:
        try:
            open_now = len(os.listdir("/proc/self/fd"))
        except OSError:
            open_now = 32
    return max(8, soft_limit - open_now - RESERVED_FDS)


class ConnectionRoom:
    """Closes the longest-waiting stalled connection when a new one would overfill the room."""

    def __init__(self, capacity: Callable[[], int] = descriptor_room, clock: Callable[[], float] = time.monotonic,
                 log_every_s: float = 10.0) -> None:
        self._capacity_of = capacity
        self._capacity: int | None = None
        self._clock = clock
        self._log_every_s = log_every_s
        self._shed_since_log = 0
        self._last_log = -float("inf")

    @property
    def capacity(self) -> int:
        if self._capacity is None:
            self._capacity = self._capacity_of()
        return self._capacity

    def admit(self, newcomer: object, connections: Iterable[WaitingConnection]) -> None:
        """Called as ``newcomer`` connects; ``connections`` are all open ones (newcomer included)."""
        open_ = [c for c in connections if not c.closing()]
        over = len(open_) - self.capacity
        if over <= 0:
            return
        waiting = sorted(((since, i, c) for i, c in enumerate(open_)
                          if c is not newcomer and (since := c.waiting_since()) is not None),
                         key=lambda item: (item[0], item[1]))
        for _, _, conn in waiting[:over]:
            conn.shed()
            self._shed_since_log += 1
        now = self._clock()
        if self._shed_since_log and now - self._last_log >= self._log_every_s:
            log.warning("%d connection(s) open, room for %d under the file-descriptor limit: closed %d "
                        "that waited longest for their client (stalled headers or body); raise "
                        "`ulimit -n` if these are real clients", len(open_), self.capacity,
                        self._shed_since_log)
            self._shed_since_log = 0
            self._last_log = now


class AcceptErrorLog:
    """Event-loop exception handler: accept() failures as one line per ``every_s`` with a count."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last = -float("inf")
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_MESSAGE:
            loop.default_exception_handler(context)
            return
        now = self._clock()
        if now - self._last < self.every_s:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last line)" if self.suppressed else ""
        log.error("cannot accept new connections: %s%s; too many are open for `ulimit -n` — stalled "
                  "ones are closed as new ones arrive", context.get("exception"), more)
        self._last = now
        self.suppressed = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.set_exception_handler(self)

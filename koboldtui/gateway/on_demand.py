"""Start what is asked for, stop what sits idle, make room on the GPUs: the gateway's lifecycle rules.

Starts go through control's ``Supervisor`` (its per-name lock and file lock keep two
controllers from racing); here one start per instance is in flight at a time (single
flight: every waiting request shares it), a request waits for it only ``wait_s`` (then 503
+ Retry-After while the start goes on), and a start that fails answers with the
instance's own reason and never takes the gateway down.

The gateway stops only what it started itself (``started_by="gateway"``), never a pinned
instance and never one a person started: idle past its ``--ttl``, or the least recently
used when a start does not fit in VRAM (the supervisor's fit check says so).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from koboldtui.control.state import StartError
from koboldtui.control.supervisor import Supervisor
from koboldtui.gateway.backends import LOADING, READY, STOPPED, Backend, BackendTable

log = logging.getLogger(__name__)
NO_FIT = "does not fit in VRAM"


class NotReady(Exception):
    """A request's instance is not ready: ``status`` and ``retry_after_s`` say what to answer."""

    def __init__(self, message: str, status: int = 503, retry_after_s: int | None = 5) -> None:
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


@dataclass
class LifecycleCounts:
    """What /metrics and ``gateway status`` report of starts and stops."""

    starts: int = 0
    start_failures: int = 0
    ttl_stops: int = 0
    room_stops: int = 0
    last_errors: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        self.last_errors = (self.last_errors + [message])[-10:]


class OnDemand:
    """Single-flight starts, TTL stops and room-making for one gateway process."""

    def __init__(self, supervisor: Supervisor, table: BackendTable, *, wait_s: float = 120.0,
                 load_timeout_s: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 on_stop: Callable[[str], None] | None = None) -> None:
        self.supervisor, self.table = supervisor, table
        self.wait_s, self.load_timeout_s, self.clock = wait_s, load_timeout_s, clock
        self.on_stop = on_stop or (lambda name: None)
        self.counts = LifecycleCounts()
        self.started_here: set[str] = set()  # names this gateway started (and may stop)
        self._starts: dict[str, Future[None]] = {}
        self._lock = threading.Lock()

    # -- start ---------------------------------------------------------------------------

    async def ensure_ready(self, backend: Backend) -> None:
        """Return when ``backend`` is ready; start it if it is stopped; raise ``NotReady`` otherwise."""
        if backend.state == READY:
            return
        if not backend.startable:
            raise NotReady(f"remote instance {backend.name!r} is {backend.state}: "
                           f"{backend.reason or 'it does not answer'}; start it on its own machine",
                           retry_after_s=30)
        future = self._start_in_background(backend)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.wait_s)
        except asyncio.TimeoutError:
            raise NotReady(f"{backend.name!r} is still loading after {self.wait_s:.0f} s; "
                           "try again shortly", retry_after_s=10) from None
        except StartError as exc:
            raise NotReady(f"{backend.name!r} could not be started: {exc}", status=503,
                           retry_after_s=None) from None

    def _start_in_background(self, backend: Backend) -> Future[None]:
        with self._lock:
            running = self._starts.get(backend.name)
            if running is not None and not running.done():
                return running  # single flight: share the start already under way
            future: Future[None] = Future()
            self._starts[backend.name] = future
        threading.Thread(target=self._start_blocking, args=(backend, future), daemon=True,
                         name=f"gateway-start-{backend.name}").start()
        return future

    def _start_blocking(self, backend: Backend, future: Future[None]) -> None:
        try:
            backend.state = LOADING
            self._start_making_room(backend)
            self.supervisor.wait_ready(backend.name, timeout_s=self.load_timeout_s)
            backend.state, backend.reason, backend.last_used = READY, None, self.clock()
            backend.out_of_rotation_until = 0.0
            future.set_result(None)
        except Exception as exc:  # never let a start take the gateway down
            message = str(exc) if isinstance(exc, StartError) else f"{type(exc).__name__}: {exc}"
            backend.state, backend.reason = STOPPED, message
            self.counts.start_failures += 1
            self.counts.error(f"start {backend.name}: {message.splitlines()[0]}")
            future.set_exception(exc if isinstance(exc, StartError) else StartError(message))

    def _start_making_room(self, backend: Backend) -> None:
        tried: set[str] = set()
        while True:
            try:
                snap = self.supervisor.start(backend.name, started_by="gateway")
            except StartError as exc:
                if NO_FIT in str(exc):
                    victim = self._least_recently_used(exclude=tried | {backend.name})
                    if victim is not None:
                        tried.add(victim.name)
                        self._stop(victim, why="room")
                        continue
                raise
            if snap.started_by == "gateway":
                self.started_here.add(backend.name)
            self.counts.starts += 1
            return

    # -- stop ----------------------------------------------------------------------------

    def stoppable(self, backend: Backend) -> bool:
        """Only what this gateway started and nobody has restarted by hand since (the shared
        run record still says "gateway"), never pinned, never a remote one. Runs in a thread."""
        if backend.name not in self.started_here or backend.pin or not backend.startable:
            return False
        try:
            owner = self.supervisor.snapshot(backend.name).started_by
        except Exception:  # noqa: BLE001 - a removed instance or an unreadable store: leave it be
            return False
        if owner != "gateway":
            self.started_here.discard(backend.name)  # the person took it over: theirs now
            return False
        return True

    def _least_recently_used(self, exclude: set[str]) -> Backend | None:
        candidates = [b for b in self.table.all() if self.stoppable(b) and b.name not in exclude
                      and b.state in (READY, LOADING)]
        candidates.sort(key=lambda b: (b.in_flight > 0, b.last_used))
        return candidates[0] if candidates else None

    def _stop(self, backend: Backend, *, why: str) -> None:
        backend.out_of_rotation_until = float("inf")  # no new requests while it drains
        log.info("gateway stops %s (%s)", backend.name, why)
        self.supervisor.stop(backend.name)  # SIGTERM: the instance drains, then exits
        self.started_here.discard(backend.name)
        backend.state, backend.reason = STOPPED, f"stopped by the gateway ({why})"
        backend.out_of_rotation_until = 0.0
        if why == "ttl":
            self.counts.ttl_stops += 1
        else:
            self.counts.room_stops += 1
        self.on_stop(backend.name)

    def reap_idle(self) -> list[str]:
        """Stop every instance this gateway started that sat idle past its TTL; the names stopped."""
        now = self.clock()
        stopped = []
        for backend in self.table.all():
            # idle: no request through us, and none the instance reports (a direct client, the Horde)
            if (self.stoppable(backend) and backend.ttl_s > 0 and backend.in_flight == 0
                    and backend.busy == 0 and backend.state == READY
                    and now - backend.last_used >= backend.ttl_s):
                with self._lock:
                    start = self._starts.get(backend.name)
                    if start is not None and not start.done():
                        continue
                self._stop(backend, why="ttl")
                stopped.append(backend.name)
        return stopped

    async def run_reaper(self, interval_s: float = 5.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                # the supervisor notices a crash (and restarts per its policy) of what we started
                await asyncio.to_thread(self.supervisor.poll, sorted(self.started_here))
                await asyncio.to_thread(self.reap_idle)
            except Exception:
                log.exception("gateway TTL check failed")

"""The gateway's eyes: a short look at every instance each few seconds (state, load, Horde jobs).

An instance that failed a request is out of rotation until a look finds it ready again
("probed back"); a remote instance that does not answer is ``unreachable``, a local one
that does not answer is ``stopped``. Looks run concurrently and never raise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from koboldtui.control.probe import STATUS_PATH
from koboldtui.control.spec import KIND_SERVE
from koboldtui.gateway.backends import LOADING, READY, STOPPED, UNREACHABLE, Backend, BackendTable

log = logging.getLogger(__name__)
ACTIVE = frozenset({"queued", "prompt", "generating"})


def auth_headers(backend: Backend) -> dict[str, str]:
    """The instance's own key (the client's key is the gateway's, never forwarded)."""
    return {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}


def apply_status(backend: Backend, body: dict[str, Any]) -> None:
    """Read load from an instance's ``/api/koboldtui/status``."""
    queue = body.get("queue") or []
    backend.busy = int(body.get("slots_busy") or 0) + int(body.get("queue_depth") or 0)
    backend.horde_busy = sum(1 for q in queue if isinstance(q, dict) and q.get("origin") == "horde"
                             and q.get("state") in ACTIVE)
    backend.other_busy = max(0, backend.busy - backend.horde_busy - backend.in_flight)
    backend.parallel = int(body.get("parallel") or 1)


class Watcher:
    """Looks at each backend; ``look_all`` once, or ``run`` forever every ``interval_s``."""

    def __init__(self, table: BackendTable, client: httpx.AsyncClient, *, interval_s: float = 2.0,
                 timeout_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.table, self.client = table, client
        self.interval_s, self.timeout_s, self.clock = interval_s, timeout_s, clock

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.table.refresh)
                await self.look_all()
            except Exception:  # the watcher must outlive any one bad look
                log.exception("gateway watcher look failed")
            await asyncio.sleep(self.interval_s)

    async def look_all(self) -> None:
        await asyncio.gather(*(self.look(b) for b in self.table.all()))

    async def look(self, backend: Backend) -> str:
        """One look; sets and returns the backend's state."""
        path = STATUS_PATH if backend.kind == KIND_SERVE else (backend.spec.health or "/api/extra/version")
        try:
            response = await self.client.get(backend.base_url + path, headers=auth_headers(backend),
                                              timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            backend.state = STOPPED if backend.startable else UNREACHABLE
            backend.reason = f"no answer at {backend.base_url} ({type(exc).__name__})"
            return backend.state
        if response.status_code == 200:
            if backend.kind == KIND_SERVE:
                try:
                    apply_status(backend, response.json())
                except (ValueError, TypeError):
                    pass
            backend.state, backend.reason = READY, None
            backend.out_of_rotation_until = 0.0  # probed back
        elif response.status_code == 503:
            backend.state = LOADING
            try:
                body = response.json()
                backend.reason = str(body.get("error") or body.get("status") or "loading")
            except (ValueError, AttributeError):
                backend.reason = "loading"
        else:
            backend.state = UNREACHABLE
            backend.reason = f"{path} answered {response.status_code}"
        return backend.state

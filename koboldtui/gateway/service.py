"""The gateway's one job per request: find the model's instances, make one ready, pick it, forward, count.

``Gateway`` composes the collaborators (backend table, watcher, on-demand lifecycle,
prefix table, forwarder, metrics); the ASGI app (app.py) only maps routes onto it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from koboldtui.api.app import error_response
from koboldtui.gateway.affinity import PrefixTable, prefix_hashes, prompt_text
from koboldtui.gateway.backends import READY, Backend, BackendTable
from koboldtui.gateway.current_model import CurrentModel
from koboldtui.gateway.metrics import GatewayMetrics
from koboldtui.gateway.on_demand import NotReady, OnDemand
from koboldtui.gateway.proxy import ClientLeft, Forwarder, UpstreamFailed, is_stream, json_body
from koboldtui.gateway.router import AFFINITY_MARGIN, choose
from koboldtui.gateway.watcher import Watcher

OUT_OF_ROTATION_S = 3600.0  # a failed instance stays out until a look finds it ready ("probed back")
GENKEYS_KEPT = 4096


@dataclass
class GatewayOptions:
    """How the gateway routes (the bench flips ``round_robin``)."""

    affinity_margin: int = AFFINITY_MARGIN
    round_robin: bool = False


class Gateway:
    """Routing and forwarding for every request the gateway takes."""

    def __init__(self, table: BackendTable, watcher: Watcher, on_demand: OnDemand, current: CurrentModel,
                 client: httpx.AsyncClient, *, options: GatewayOptions | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.table, self.watcher, self.on_demand, self.current = table, watcher, on_demand, current
        self.forwarder = Forwarder(client)
        self.prefixes = PrefixTable()
        self.metrics = GatewayMetrics()
        self.options = options or GatewayOptions()
        self.clock = clock
        self.genkeys: OrderedDict[str, str] = OrderedDict()  # KoboldAI genkey → instance (check, abort)
        self._turn = 0
        on_demand.on_stop = self.prefixes.forget

    # -- names ---------------------------------------------------------------------------

    def current_name(self) -> str | None:
        """The current model; when none was chosen (or it was removed), the first ready instance,
        else the first one this box can start (never an unreachable remote while a local exists)."""
        name = self.current.name
        if name and self.table.resolve(name):
            return name
        backends = self.table.all()
        for fits in (lambda b: b.state == READY, lambda b: b.startable):
            pick = next((b.name for b in backends if fits(b)), None)
            if pick is not None:
                return pick
        names = self.table.known_names()
        return names[0] if names else None

    def unknown(self, request: Request, model: str | None) -> Response:
        self.metrics.count("unknown_models")
        known = ", ".join(self.table.known_names()) or "none: add one with `koboldtui instance add`"
        what = f"model {model!r} is not on this box" if model else "no model is chosen on this box"
        message = f"{what}; models: {known}"
        return error_response(request, 404, message, code="model_not_found", param="model" if model else None)

    # -- the request path ----------------------------------------------------------------

    async def handle(self, request: Request, path: str, *, model: str | None = None) -> Response:
        """Forward ``request`` to an instance of ``model`` (from the body for OpenAI, else current)."""
        raw = await request.body()
        body = json_body(raw)
        asked = model or (body.get("model") if isinstance(body.get("model"), str) else None)
        if path.startswith("/v1/") and asked:
            if not self.table.resolve(asked):
                return self.unknown(request, asked)
        else:  # KoboldAI routes (and OpenAI requests naming no model) go to the current model
            asked = self.current_name()
        if asked is None:
            return self.unknown(request, None)
        pool = self.table.resolve(asked)
        hashes = prefix_hashes(prompt_text(path, body)) if request.method == "POST" else []
        tried: set[str] = set()
        for attempt in range(2):  # one retry on another pool member when nothing came back
            try:
                backend, affinity = await self._pick(pool, hashes, exclude=tried)
            except NotReady as exc:
                return self._error(request, exc.status, str(exc), exc.retry_after_s)
            tried.add(backend.name)
            self.metrics.routed(asked, backend.name, affinity=affinity)
            if hashes:
                self.prefixes.record(backend.name, hashes)
            genkey = body.get("genkey")
            if isinstance(genkey, str) and genkey:
                self._remember_genkey(genkey, backend.name)
            try:
                return await self._forward(request, backend, path, raw)
            except UpstreamFailed as exc:
                self._take_out(backend, str(exc))
                if attempt == 0 and any(b.name not in tried and b.in_rotation(self.clock()) for b in pool):
                    self.metrics.count("retries")
                    continue
                return self._error(request, 502, f"{exc}; it is out of rotation until it answers again", 5)
            except ClientLeft:
                return Response(status_code=499)
        raise AssertionError("unreachable")

    async def _pick(self, pool: list[Backend], hashes: list[bytes], exclude: set[str]) -> tuple[Backend, bool | None]:
        now = self.clock()
        ready = [b for b in pool if b.in_rotation(now) and b.name not in exclude]
        if ready:
            self._turn += 1
            choice = choose(ready, self.prefixes, hashes, margin=self.options.affinity_margin,
                            round_robin=self.options.round_robin, turn=self._turn)
            return choice.backend, choice.affinity
        candidates = [b for b in pool if b.name not in exclude]
        if not candidates:
            raise NotReady("no other instance of this model is ready", retry_after_s=5)
        # none ready: wait for one that is loading, else start the one used last (its files are warm)
        candidates.sort(key=lambda b: (b.state != "loading", not b.startable, -b.last_used))
        target = candidates[0]
        await self.on_demand.ensure_ready(target)
        return target, None

    async def _forward(self, request: Request, backend: Backend, path: str, raw: bytes) -> Response:
        backend.in_flight += 1
        backend.requests += 1
        backend.last_used = self.clock()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                backend.in_flight -= 1
                backend.last_used = self.clock()

        try:
            upstream = await self.forwarder.open(request, backend, path, raw)
            if upstream.status_code >= 500:
                backend.errors += 1
            if not is_stream(upstream):
                response = await self.forwarder.read_whole(request, backend, upstream)
                release()
                return response
        except BaseException:
            release()
            raise
        return self.forwarder.relay(path, backend, upstream, on_fault=self._stream_fault, on_done=release)

    def _stream_fault(self, backend: Backend, message: str) -> None:
        self.metrics.count("stream_faults")
        self._take_out(backend, message)

    def _take_out(self, backend: Backend, reason: str) -> None:
        backend.errors += 1
        backend.reason = reason
        backend.out_of_rotation_until = self.clock() + OUT_OF_ROTATION_S
        self.prefixes.forget(backend.name)
        self.on_demand.counts.error(reason.splitlines()[0])

    def _error(self, request: Request, status: int, message: str, retry_after_s: int | None) -> Response:
        if status >= 500:
            self.metrics.count("errors_5xx")
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
        return error_response(request, status, message, kind="service_unavailable" if status == 503
                              else "server_error", headers=headers)

    def _remember_genkey(self, genkey: str, name: str) -> None:
        self.genkeys[genkey] = name
        self.genkeys.move_to_end(genkey)
        while len(self.genkeys) > GENKEYS_KEPT:
            self.genkeys.popitem(last=False)

    # -- KoboldAI routes tied to a genkey --------------------------------------------------

    async def by_genkey(self, request: Request, path: str) -> Response:
        """check / abort / last_logprobs go to the instance that got the genkey; without one, the current model's."""
        raw = await request.body()
        genkey = json_body(raw).get("genkey")
        name = self.genkeys.get(genkey) if isinstance(genkey, str) else None
        backend = self.table.get(name) if name else None
        if backend is None:
            return await self.handle(request, path)
        try:
            return await self._forward(request, backend, path, raw)
        except UpstreamFailed as exc:
            return self._error(request, 502, str(exc), 5)
        except ClientLeft:
            return Response(status_code=499)

    # -- answers the gateway gives itself --------------------------------------------------

    def models(self) -> dict[str, Any]:
        """``/v1/models``: every instance and every pool, with its state."""
        data: list[dict[str, Any]] = []
        for backend in self.table.all():
            data.append({"id": backend.name, "object": "model", "created": 0, "owned_by": "koboldtui",
                         "state": backend.state, "kind": backend.kind, "pool": backend.alias})
        names = {b.name for b in self.table.all()}
        for alias, members in sorted(self.table.pools().items()):
            if alias in names:
                continue
            states = {m.state for m in members}
            state = READY if READY in states else ("loading" if "loading" in states else members[0].state)
            data.append({"id": alias, "object": "model", "created": 0, "owned_by": "koboldtui",
                         "state": state, "kind": "pool", "instances": [m.name for m in members]})
        return {"object": "list", "data": data}

    def status(self) -> dict[str, Any]:
        """``gateway status --json``: current model, pools, instances, counts, last errors."""
        counts = self.on_demand.counts
        return {
            "current_model": self.current_name(),
            "pools": {alias: [m.name for m in members] for alias, members in sorted(self.table.pools().items())},
            "instances": [dict(b.to_dict(), started_by_gateway=b.name in self.on_demand.started_here)
                          for b in self.table.all()],
            "routing": self.metrics.to_dict(),
            "starts": counts.starts, "start_failures": counts.start_failures,
            "ttl_stops": counts.ttl_stops, "room_stops": counts.room_stops,
            "last_errors": list(counts.last_errors),
        }

    async def current_ready(self) -> Backend | None:
        """A ready instance of the current model, or None (discovery routes never start one)."""
        name = self.current_name()
        if name is None:
            return None
        now = self.clock()
        ready = [b for b in self.table.resolve(name) if b.in_rotation(now)]
        return ready[0] if ready else None

    async def discovery(self, request: Request, path: str) -> Response:
        """``/api/v1/model`` and ``/api/extra/version`` for the current model, without starting it."""
        backend = await self.current_ready()
        name = self.current_name()
        # with a gateway key, a client without it learns that one is needed, not the model (as an instance)
        if not request.scope.get("state", {}).get("authorized", True):
            if path == "/api/v1/model":
                return JSONResponse({"result": "koboldcpp/protected-model"})
            return JSONResponse({"result": "KoboldCpp", "version": "1.80", "protected": True, "admin": 1})
        if backend is not None:
            try:
                upstream = await self.forwarder.open(request, backend, path, b"")
                response = await self.forwarder.read_whole(request, backend, upstream)
            except (UpstreamFailed, ClientLeft):
                response = None
            if response is not None and response.status_code == 200:
                if path == "/api/extra/version":
                    body = json_body(bytes(response.body))
                    body["admin"] = 1  # the admin routes switch models here (KoboldCpp's flag)
                    return JSONResponse(body)
                return response
        if path == "/api/v1/model":
            return JSONResponse({"result": f"koboldcpp/{name}" if name else "inactive"})
        return JSONResponse({"result": "KoboldCpp", "version": "1.80", "protected": False, "admin": 1,
                             "txt2img": False, "vision": False})

    async def keep_watching(self) -> None:
        """The watcher, and the current model re-read, for the app's lifespan."""
        while True:
            await asyncio.to_thread(self.current.reload)
            await asyncio.sleep(self.watcher.interval_s)

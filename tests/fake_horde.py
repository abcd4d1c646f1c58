"""A fake AI Horde on 127.0.0.1 (real HTTP, uvicorn in a thread): tests never reach the real one.

It follows ../shared/HORDE.md: key checks (InvalidAPIKey, AnonForbiddenWorker,
WrongCredentials), worker registration on the first pop, maintenance (PUT and the
403 WorkerMaintenance on pop), InvalidJobID / DuplicateGen on submit, find_user,
worker details and heartbeat. Tests script it: queue pop or submit answers (a job or
any error reply), set ``skipped``, and read back every request it received.

``ScriptedEngine`` (below) stands in for our engine only in tests of the worker's
*protocol* logic (error codes, backoff, the window, stop), where what matters is
when jobs start and end, not the text; generation itself is tested on the real engine.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from typing_extensions import Self

from koboldtui.engine.types import (
    EngineSnapshot,
    EngineTotals,
    FinishReason,
    GenerationRequest,
    GenerationResult,
)

ANON_KEY = "0000000000"


@dataclass
class Reply:
    """A scripted answer: HTTP status, JSON body, headers, and a delay before it (timeouts)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def error_reply(
    status: int, rc: str | None, message: str = "scripted error", **headers: str
) -> Reply:
    """An error as the Horde sends it: ``{"message", "rc"}``."""
    body: dict[str, Any] = {"message": message}
    if rc is not None:
        body["rc"] = rc
    return Reply(status, body, dict(headers))


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    at: float


def job_reply(
    prompt: str = "Once upon a time", n: int = 1, ttl: int = 150, **payload: Any
) -> dict[str, Any]:
    """A pop answer carrying one job (``n`` ids), payload keys as the Horde sends them."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    body = {
        "prompt": prompt,
        "n": n,
        "max_length": 16,
        "max_context_length": 512,
        "temperature": 0.7,
    }
    body.update(payload)
    return {
        "id": ids[0],
        "ids": ids,
        "model": "koboldcpp/test",
        "ttl": ttl,
        "skipped": {},
        "messages": [],
        "payload": body,
    }


class FakeHorde:
    """The Horde endpoints a text worker uses, scriptable, recording."""

    def __init__(self, keys: dict[str, str] | None = None) -> None:
        self._initial_keys = dict(keys or {"good-key": "tester#42"})
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.reset()

    def reset(self) -> None:
        """Forget every worker, job, script and record (one server can serve many tests)."""
        with self._lock:
            self.keys = dict(self._initial_keys)  # api key -> username
            self.kudos: dict[str, float] = {k: 1000.0 for k in self.keys}
            # worker name -> owning key (others get WrongCredentials)
            self.name_owners: dict[str, str] = {}
            self.pop_script: list[dict[str, Any] | Reply] = []
            self.submit_script: list[Reply | None] = []
            self.skipped: dict[str, int] = {}
            self.reward = 10.0
            self.records: list[Recorded] = []
            self.workers: dict[str, dict[str, Any]] = {}  # name -> details
            # job id -> payload (handed out, not yet submitted)
            self.jobs: dict[str, dict[str, Any]] = {}
            self.submitted: dict[str, dict[str, Any]] = {}  # job id -> submit body
            self.on_pop: Callable[[Recorded], None] | None = None

    # --------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-horde", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake Horde did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --------------------------------------------------------------- queries

    def requests(self, path_suffix: str = "", method: str | None = None) -> list[Recorded]:
        """Recorded requests whose path ends with ``path_suffix`` (and method, if given)."""
        with self._lock:
            return [
                r
                for r in self.records
                if r.path.endswith(path_suffix) and (method is None or r.method == method)
            ]

    def pops(self) -> list[Recorded]:
        return self.requests("/v2/generate/text/pop")

    def submits(self) -> list[Recorded]:
        return self.requests("/v2/generate/text/submit")

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Poll ``predicate`` until true (tests run the worker on the same loop, so yield often)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the fake Horde condition")
            await asyncio.sleep(0.005)

    # --------------------------------------------------------------- the app

    def _record(self, request: Request, body: Any) -> Recorded:
        rec = Recorded(
            request.method,
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            time.monotonic(),
        )
        with self._lock:
            self.records.append(rec)
        return rec

    def _key_error(self, key: str | None) -> JSONResponse | None:
        if key == ANON_KEY:
            return None  # checked per endpoint (anon can find_user, cannot work)
        if key not in self.keys:
            return JSONResponse(
                {"message": "Wrong API Key", "rc": "InvalidAPIKey"}, status_code=401
            )
        return None

    @staticmethod
    def _reply(reply: Reply) -> JSONResponse:
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

    def _app(self) -> Starlette:
        async def pop(request: Request) -> JSONResponse:
            body = await request.json()
            rec = self._record(request, body)
            if self.on_pop is not None:
                self.on_pop(rec)
            key = request.headers.get("apikey")
            if (err := self._key_error(key)) is not None:
                return err
            if key == ANON_KEY:
                return JSONResponse(
                    {"message": "Anonymous user is forbidden", "rc": "AnonForbiddenWorker"},
                    status_code=403,
                )
            name = body.get("name")
            if not name or not body.get("models"):
                return JSONResponse(
                    {"message": "Input payload validation failed", "errors": {"name": "required"}},
                    status_code=400,
                )
            with self._lock:
                owner = self.name_owners.setdefault(name, key)
                if owner != key:
                    return JSONResponse(
                        {
                            "message": "Wrong credentials to submit as this worker.",
                            "rc": "WrongCredentials",
                        },
                        status_code=403,
                    )
                worker = self.workers.setdefault(
                    name,
                    {
                        "id": str(uuid.uuid4()),
                        "name": name,
                        "maintenance_mode": False,
                        "kudos_rewards": 0.0,
                        "requests_fulfilled": 0,
                    },
                )
                if worker["maintenance_mode"]:
                    return JSONResponse(
                        {
                            "message": f"Worker {name} is in maintenance mode: "
                            f"{worker.get('maintenance_msg', '')}",
                            "rc": "WorkerMaintenance",
                        },
                        status_code=403,
                    )
                item = self.pop_script.pop(0) if self.pop_script else None
            if isinstance(item, Reply):
                await asyncio.sleep(item.delay_s)
                return self._reply(item)
            if item is None:
                return JSONResponse(
                    {
                        "id": None,
                        "ids": [],
                        "payload": {},
                        "skipped": dict(self.skipped),
                        "messages": [],
                    }
                )
            with self._lock:
                for job_id in item["ids"]:
                    self.jobs[job_id] = item["payload"]
            # json.dumps, not JSONResponse: a payload may carry inf (1e999) as a real one can
            return Response(json.dumps(item), media_type="application/json")

        async def submit(request: Request) -> JSONResponse:
            body = await request.json()
            self._record(request, body)
            if (err := self._key_error(request.headers.get("apikey"))) is not None:
                return err
            with self._lock:
                item = self.submit_script.pop(0) if self.submit_script else None
                if isinstance(item, Reply):
                    return self._reply(item)
                job_id = body.get("id")
                if job_id in self.submitted:
                    return JSONResponse(
                        {
                            "message": "Processing Generation with ID already submitted.",
                            "rc": "DuplicateGen",
                        },
                        status_code=400,
                    )
                if job_id not in self.jobs:
                    return JSONResponse(
                        {
                            "message": "Processing Generation with ID not found.",
                            "rc": "InvalidJobID",
                        },
                        status_code=404,
                    )
                self.jobs.pop(job_id)
                self.submitted[job_id] = body
                reward = self.reward if body.get("state") == "ok" else 0.0
            return JSONResponse({"reward": reward})

        async def find_user(request: Request) -> JSONResponse:
            self._record(request, None)
            key = request.headers.get("apikey")
            if key == ANON_KEY:
                return JSONResponse({"username": "Anonymous#0", "kudos": 0, "worker_ids": []})
            if (err := self._key_error(key)) is not None:
                return err
            ids = [w["id"] for n, w in self.workers.items() if self.name_owners.get(n) == key]
            return JSONResponse(
                {
                    "username": self.keys[key],
                    "kudos": self.kudos[key],
                    "worker_ids": ids,
                    "trusted": False,
                }
            )

        async def worker_by_name(request: Request) -> JSONResponse:
            self._record(request, None)
            worker = self.workers.get(request.path_params["name"])
            if worker is None:
                return JSONResponse(
                    {"message": "Worker Not Found", "rc": "WorkerNotFound"}, status_code=404
                )
            return JSONResponse(worker)

        async def worker_by_id(request: Request) -> JSONResponse:
            body = await request.json() if request.method == "PUT" else None
            self._record(request, body)
            found = [
                (n, w)
                for n, w in self.workers.items()
                if w["id"] == request.path_params["worker_id"]
            ]
            if not found:
                return JSONResponse(
                    {"message": "Worker Not Found", "rc": "WorkerNotFound"}, status_code=404
                )
            name, worker = found[0]
            if request.method == "GET":
                return JSONResponse(worker)
            key = request.headers.get("apikey")
            if (err := self._key_error(key)) is not None:
                return err
            if self.name_owners.get(name) != key:
                return JSONResponse(
                    {"message": "You can only modify your own workers", "rc": "NotOwner"},
                    status_code=403,
                )
            with self._lock:
                worker["maintenance_mode"] = bool(body.get("maintenance"))
                worker["maintenance_msg"] = body.get("maintenance_msg", "")
            return JSONResponse({"maintenance": worker["maintenance_mode"]})

        async def heartbeat(request: Request) -> JSONResponse:
            self._record(request, None)
            return JSONResponse({"message": "OK", "version": "4.0.0-fake"})

        return Starlette(
            routes=[
                Route("/api/v2/generate/text/pop", pop, methods=["POST"]),
                Route("/api/v2/generate/text/submit", submit, methods=["POST"]),
                Route("/api/v2/find_user", find_user, methods=["GET"]),
                Route("/api/v2/workers/name/{name}", worker_by_name, methods=["GET"]),
                Route("/api/v2/workers/{worker_id}", worker_by_id, methods=["GET", "PUT"]),
                Route("/api/v2/status/heartbeat", heartbeat, methods=["GET"]),
            ]
        )


# --------------------------------------------------------------------------- engine stand-in


class ScriptedHandle:
    """A GenerationHandle whose end the test decides (``release``) — for protocol tests only."""

    def __init__(self, engine: ScriptedEngine, request: GenerationRequest) -> None:
        self.engine = engine
        self.request = request
        self.genkey = request.genkey
        self.queued_at = time.monotonic()
        self._done = asyncio.Event()
        self._finish = FinishReason.LENGTH
        self._error: str | None = None
        self.aborted = False
        if not engine.hold:
            self._done.set()

    def release(self, finish: FinishReason = FinishReason.LENGTH, error: str | None = None) -> None:
        self._finish, self._error = finish, error
        self._done.set()

    def stream(self) -> Any:  # pragma: no cover - the worker does not stream
        raise NotImplementedError

    async def result(self) -> GenerationResult:
        await self._done.wait()
        self.engine.running.discard(self)
        text = self.engine.text if self._finish is not FinishReason.ABORT else ""
        now = time.monotonic()
        tokens = len(text.split())
        return GenerationResult(
            genkey=self.genkey,
            text=text,
            finish_reason=self._finish,
            prompt_tokens=4,
            completion_tokens=tokens,
            truncated_tokens=0,
            seed=self.engine.seed,
            queued_at=self.queued_at,
            first_token_at=now - 0.1 * tokens,
            finished_at=now,
            error=self._error,
        )

    def partial_text(self) -> str:
        return ""

    def abort(self) -> None:
        self.aborted = True
        self.release(FinishReason.ABORT)


class ScriptedEngine:
    """A TextEngine for worker-protocol tests; ``hold=True`` keeps jobs running until released."""

    model_name = "scripted"
    model_path = "/models/scripted-model.Q4_K_M.gguf"
    n_ctx = 2048
    n_ctx_per_seq = 512
    parallel = 4
    n_batch = 512
    n_ubatch = 512

    def __init__(
        self, text: str = "the scripted answer.", hold: bool = False, seed: int = 1234
    ) -> None:
        self.text = text
        self.hold = hold
        self.seed = seed
        self.fail_with: Exception | None = None  # raised by submit (an EngineError, or a bug)
        self.requests: list[GenerationRequest] = []
        self.running: set[ScriptedHandle] = set()

    def submit(self, request: GenerationRequest) -> ScriptedHandle:
        if self.fail_with is not None:
            raise self.fail_with
        self.requests.append(request)
        handle = ScriptedHandle(self, request)
        self.running.add(handle)
        return handle

    async def submit_async(self, request: GenerationRequest) -> ScriptedHandle:
        return self.submit(request)

    def release_all(self, finish: FinishReason = FinishReason.LENGTH) -> None:
        for handle in list(self.running):
            handle.release(finish)

    def abort(self, genkey: str) -> bool:
        for handle in list(self.running):
            if handle.genkey == genkey:
                handle.abort()
                return True
        return False

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(
            self.model_name,
            self.model_path,
            self.n_ctx,
            self.n_ctx_per_seq,
            self.n_batch,
            self.n_ubatch,
            self.parallel,
            len(self.running),
            0,
            (),
            EngineTotals(),
        )

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join("x" for _ in tokens)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return "\n".join(m.get("content", "") for m in messages)


# ------------------------------------------------------------------ time and worker helpers


class FakeTime:
    """An injected clock and sleep: sleeping moves the clock at once, so waits take no time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(self.now)
        await asyncio.sleep(0.001)  # let HTTP and job tasks run


def build_worker(
    horde_url: str,
    engine: Any,
    *,
    time: FakeTime | None = None,
    key: str = "good-key",
    name: str = "koboldtui-test-worker",
    parallel: int = 4,
    rng: Callable[[], float] = lambda: 0.0,
    gate: Any = None,
    client: Any = None,
    journal: Any = None,
    **overrides: Any,
) -> Any:
    """A HordeWorker wired to the fake Horde with an injected clock; ``worker.gate`` is its gate."""
    from koboldtui.config import HordeSettings
    from koboldtui.horde.priority import LocalPriorityGate
    from koboldtui.horde.worker import HordeWorker

    time = time or FakeTime()
    fields: dict[str, Any] = {
        "enabled": True,
        "api_key": key,
        "worker_name": name,
        "url": horde_url,
        "window_s": 20.0,
    }
    fields.update(overrides)
    settings = HordeSettings(**fields)
    gate = gate or LocalPriorityGate(settings.window_s, clock=time.clock)
    worker = HordeWorker(
        engine,
        gate,
        settings,
        n_ctx_per_seq=engine.n_ctx_per_seq,
        parallel=parallel,
        model_path=engine.model_path,
        clock=time.clock,
        sleep=time.sleep,
        rng=rng,
        client=client,
        journal=journal,
    )
    worker.gate = gate
    return worker

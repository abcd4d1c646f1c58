"""POST /api/koboldtui/horde/{start,stop,maintenance} over real HTTP, against the fake Horde.

The app here mounts only ``horde_routes`` (the lead's full app mounts the same list);
it runs on the test's event loop because the worker must share the instance's loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fake_horde import FakeHorde, FakeTime, ScriptedEngine, build_worker
from starlette.applications import Starlette

from koboldtui.api.app import json_error_handlers
from koboldtui.api.horde_routes import horde_routes
from koboldtui.horde.worker import HordeWorker


async def serve(app: Starlette) -> AsyncIterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def worker(horde: FakeHorde) -> AsyncIterator[HordeWorker]:
    w = build_worker(horde.url, ScriptedEngine(), time=FakeTime())
    yield w
    await w.stop(force=True)


@pytest.fixture
async def api(worker: HordeWorker) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=horde_routes(lambda: worker), exception_handlers=json_error_handlers())
    async for base in serve(app):
        async with httpx.AsyncClient(base_url=base) as client:
            yield client


async def test_without_a_worker_every_route_says_how_to_enable_it() -> None:
    app = Starlette(routes=horde_routes(lambda: None))
    async for base in serve(app):
        async with httpx.AsyncClient(base_url=base) as client:
            for path in ("start", "stop", "maintenance"):
                response = await client.post(f"/api/koboldtui/horde/{path}", json={})
                assert response.status_code == 409
                assert "--horde-name" in response.json()["error"]


async def test_start_maintenance_and_stop(
    api: httpx.AsyncClient, worker: HordeWorker, horde: FakeHorde
) -> None:
    response = await api.post("/api/koboldtui/horde/start")
    assert response.status_code == 200 and response.json()["ok"] is True
    await horde.wait_for(lambda: worker.worker_id is not None)

    response = await api.post(
        "/api/koboldtui/horde/maintenance", json={"on": True, "message": "upgrading"}
    )
    assert response.status_code == 200 and response.json()["horde"]["state"] == "maintenance"
    put = horde.requests(f"/v2/workers/{worker.worker_id}", method="PUT")[0]
    assert (
        put.json == {"maintenance": True, "maintenance_msg": "upgrading"}
        and put.headers["apikey"] == "good-key"
    )
    await horde.wait_for(
        lambda: horde.pops()[-1].at > put.at
    )  # the next pop meets 403 WorkerMaintenance
    await horde.wait_for(lambda: worker.status()["state"] == "maintenance")
    assert worker.status()["maintenance_message"]

    response = await api.post("/api/koboldtui/horde/maintenance", json={"on": False})
    assert (
        response.status_code == 200
        and horde.workers[worker.settings.worker_name]["maintenance_mode"] is False
    )
    await horde.wait_for(lambda: worker.status()["state"] in ("idle", "popping"))

    response = await api.post("/api/koboldtui/horde/stop", json={"force": False})
    assert response.status_code == 200 and response.json()["jobs_in_progress"] == 0
    await worker.wait_stopped()
    assert worker.status()["state"] == "stopped"


async def test_bad_bodies_say_what_to_send(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/koboldtui/horde/stop", json={"force": "yes"})
    assert response.status_code == 400 and "true or false" in response.json()["error"]
    response = await api.post("/api/koboldtui/horde/stop", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = await api.post("/api/koboldtui/horde/maintenance", json={"message": "x"})
    assert response.status_code == 400 and '"on"' in response.json()["error"]


async def test_maintenance_before_registration_explains(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/koboldtui/horde/maintenance", json={"on": True})
    assert response.status_code == 409 and "first pop" in response.json()["error"]


async def test_maintenance_refused_by_the_horde(
    api: httpx.AsyncClient, worker: HordeWorker, horde: FakeHorde
) -> None:
    await api.post("/api/koboldtui/horde/start")
    await horde.wait_for(lambda: worker.worker_id is not None)
    horde.name_owners[worker.settings.worker_name] = "someone-else"
    response = await api.post("/api/koboldtui/horde/maintenance", json={"on": True})
    assert response.status_code == 502 and "refused" in response.json()["error"]

"""Stopping a busy instance: every client gets an answer with a finish reason, never a 500 or a cut stream.

A real ``koboldtui serve`` process with the bundled model, 8 streaming requests (OpenAI
and KoboldAI) plus 2 plain ones in flight, then SIGTERM. The drain window is shortened
with ``--drain-s`` so the test takes seconds; what it checks does not depend on its length.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from koboldtui.stop_budget import instance_stop_s, supervisor_grace_s
from tests.instance_harness import free_port

pytestmark = pytest.mark.slow


def _serve(port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "koboldtui.cli", "serve", "--port", str(port), "--ctx", "1024",
         "--parallel", "4", "--max-queue", "16", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )


def _wait_ready(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("the instance did not become ready")


async def _openai_stream(client: httpx.AsyncClient, started: asyncio.Event) -> tuple[int, str | None]:
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 900,
            "stream": True, "temperature": 0.8}
    finish = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                started.set()
                reason = json.loads(line[6:])["choices"][0]["finish_reason"]
                finish = reason or finish
        return response.status_code, finish


async def _kobold_stream(client: httpx.AsyncClient, started: asyncio.Event) -> tuple[int, str | None]:
    body = {"prompt": "Once upon a time", "max_length": 900}
    finish = None
    async with client.stream("POST", "/api/extra/generate/stream", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                started.set()
                finish = json.loads(line[6:])["finish_reason"] or finish
        return response.status_code, finish


async def _kobold_plain(client: httpx.AsyncClient) -> tuple[int, str | None]:
    response = await client.post("/api/v1/generate", json={"prompt": "Hello", "max_length": 900})
    data = response.json()
    return response.status_code, data["results"][0]["finish_reason"] if response.status_code == 200 else None


def test_the_supervisor_grace_always_exceeds_the_instance_drain() -> None:
    for horde in (False, True):
        assert supervisor_grace_s(horde) > instance_stop_s(horde)


def test_sigterm_during_8_streams_gives_every_client_a_finish_reason(bundled_model) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(port, "--drain-s", "2")
    try:
        _wait_ready(base, proc)

        async def scenario() -> tuple[list[tuple[int, str | None]], float]:
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
                started = [asyncio.Event() for _ in range(8)]
                tasks = [asyncio.create_task((_openai_stream if i % 2 else _kobold_stream)(client, e))
                         for i, e in enumerate(started)]
                tasks += [asyncio.create_task(_kobold_plain(client)) for _ in range(2)]
                deadline = time.monotonic() + 60
                while sum(e.is_set() for e in started) < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)  # some streams are generating, the rest queued
                assert sum(e.is_set() for e in started) >= 2
                signalled = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                async with httpx.AsyncClient(base_url=base, timeout=10) as late:  # a new connection
                    newcomer = await late.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 4})
                    health = await late.get("/health")
                results = await asyncio.gather(*tasks)
                return results, time.monotonic() - signalled, newcomer, health

        results, took, newcomer, health = asyncio.run(scenario())
        # during the drain a new request gets the documented 503, not "connection refused"
        assert newcomer.status_code == 503 and "shutting down" in newcomer.text, newcomer.text
        assert newcomer.headers.get("Retry-After")
        assert health.status_code == 503 and health.json()["status"] == "stopping"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        output = proc.stdout.read() if proc.stdout else ""
    assert [code for code, _ in results] == [200] * 10, (results, output[-2000:])
    assert all(finish in ("length", "stop", "abort") for _, finish in results), results
    assert any(finish == "abort" for _, finish in results), results  # the drain window was used
    assert "timeout graceful shutdown exceeded" not in output and "Traceback" not in output
    assert took < 2 + 10, took  # the drain window plus the time an abort takes to land
    reasons = sorted(str(finish) for _, finish in results)
    print(f"SIGTERM during 8 streams + 2 plain: all answered in {took:.1f} s, finish reasons {reasons}")


def test_two_quick_signals_still_submit_the_horde_job_in_hand_and_pop_nothing_more(
    bundled_model, horde
) -> None:
    from fake_horde import job_reply

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    job = job_reply(prompt="Write a very long story about a dragon.", max_length=500, ttl=150)
    horde.pop_script.append(job)
    env = {**os.environ, "KOBOLDTUI_HORDE_KEY": "good-key"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "koboldtui.cli", "serve", "--port", str(port), "--ctx", "1024",
         "--parallel", "2", "--horde", "--horde-name", "drain-test", "--horde-url", horde.url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        _wait_ready(base, proc)
        deadline = time.monotonic() + 60
        while not horde.pops() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the job is generating
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)  # uvicorn's force_exit used to skip the submit here
        assert proc.wait(timeout=supervisor_grace_s(True)) == 0
    finally:
        proc.kill()
        output = proc.stdout.read() if proc.stdout else ""
    submitted = horde.submits()
    assert [s.json["id"] for s in submitted] == [job["ids"][0]], output[-2000:]
    assert submitted[0].json["state"] in ("ok", "faulted")
    assert not [p for p in horde.pops() if p.at > signalled + 0.1], "popped after the stop signal"

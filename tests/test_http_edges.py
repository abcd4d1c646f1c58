"""HTTP edges of a real ``koboldtui serve``: huge bodies, uploads cut short, slow headers, endless queues.

One instance process for the module (``--parallel 1`` so a second request queues), raw
sockets where a well-behaved client library would not misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from koboldtui.api.header_timeout import HeaderTimeoutH11Protocol
from tests.grammar_fuzz import rss_mb
from tests.instance_harness import free_port, serve_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def instance(shared_models_dir) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    model = next(shared_models_dir.glob("*.gguf"))
    with serve_process(model, "--ctx", "1024", "--parallel", "1", "--queue-timeout", "2") as served:
        yield served


def test_a_300_mb_body_is_refused_before_it_is_buffered(instance) -> None:
    base, proc, _ = instance
    before = rss_mb(proc.pid)
    # a declared 300 MB body: refused from the headers alone (raw socket: httpx will not lie)
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /api/v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 314572800\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # the server closes after its answer
            answer += chunk
    assert answer.decode().startswith("HTTP/1.1 413") and "the limit is" in answer.decode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        block = b"x" * (1024 * 1024)
        for _ in range(300):
            yield block

    try:
        response = httpx.post(base + "/api/v1/generate", content=chunks(), timeout=60,
                              headers={"Content-Type": "application/json"})
        status = response.status_code
    except httpx.HTTPError:  # the server may close while we are still sending
        status = 413
    assert status == 413
    grew = rss_mb(proc.pid) - before
    print(f"RSS before {before:.0f} MB, growth after a 300 MB chunked POST: {grew:.0f} MB")
    assert grew < 100, grew  # the old check buffered it all first (+500 MB)


def test_an_upload_cut_short_is_one_quiet_line(instance) -> None:
    base, _, lines = instance
    start = len(lines)
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /api/v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n" + b"{" * 1000)
        time.sleep(0.3)
    time.sleep(1.0)
    assert httpx.get(base + "/health").status_code == 200
    new = lines[start:]
    assert not any("Traceback" in line or "unexpected error" in line for line in new), new
    assert len(new) <= 1, new


def test_a_request_that_cannot_get_a_slot_gets_a_503_after_its_queue_timeout(instance) -> None:
    base, _, _ = instance

    async def two() -> tuple[httpx.Response, httpx.Response, float]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            long = asyncio.create_task(client.post("/api/v1/generate", json={
                "prompt": "Write a long story.", "max_length": 800, "ban_eos_token": True, "genkey": "LONG1"}))
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            queued = await client.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 4})
            waited = time.monotonic() - t0
            await client.post("/api/extra/abort", json={"genkey": "LONG1"})
            return await long, queued, waited

    long, queued, waited = asyncio.run(two())
    assert queued.status_code == 503 and "waited 2 s in the queue" in queued.json()["error"]
    assert queued.headers.get("Retry-After") and waited < 10
    assert long.status_code == 200


def test_half_sent_headers_are_cut_off_after_the_header_timeout() -> None:
    class Quick(HeaderTimeoutH11Protocol):
        header_timeout_s = 1.0

    async def app(scope, receive, send):  # pragma: no cover - never reached by the slow client
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=Quick,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
            s.settimeout(10)
            t0 = time.monotonic()
            assert s.recv(1024) == b""  # closed by the server
            assert time.monotonic() - t0 < 5
        with socket.create_connection(("127.0.0.1", port)) as s:  # a prompt client is served
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            assert s.recv(1024).startswith(b"HTTP/1.1 204")
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""Stalled bodies, descriptor exhaustion and oversized headers against a real ``koboldtui serve``
(issue 20, points 4 and 7), with raw sockets.

The instance runs with ``RLIMIT_NOFILE`` 256, so a few hundred stalled clients are enough
to reach the limit that 1,100 reached under ``ulimit -n 1024``.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx
import pytest

from koboldtui.api.header_timeout import BODY_IDLE_S
from tests.instance_harness import free_port, serve_process

STALLED = b"POST /api/v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"p"


def _limit_fds(n: int):  # type: ignore[no-untyped-def]
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


@pytest.fixture(scope="module")
def instance(shared_models_dir) -> Iterator[tuple[int, list[str]]]:
    model = next(shared_models_dir.glob("*.gguf"))
    with serve_process(model, "--ctx", "256", "--parallel", "1", preexec_fn=_limit_fds(256)) as (base, _, lines):
        yield int(base.rsplit(":", 1)[1]), lines


def _health_s(port: int) -> float:
    t0 = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    return time.monotonic() - t0


def test_a_body_that_stops_arriving_gets_a_408_within_the_deadline(instance) -> None:
    port, _ = instance
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(STALLED)  # complete headers, Content-Length 100, 3 bytes, then silence
        s.settimeout(BODY_IDLE_S + 10)
        t0 = time.monotonic()
        answer = s.recv(4096)
        took = time.monotonic() - t0
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"stopped arriving" in answer
        while s.recv(4096):  # then the connection closes
            pass
    assert BODY_IDLE_S - 1 < took < BODY_IDLE_S + 5
    assert _health_s(port) < 0.5


def test_a_request_answered_before_its_body_gets_no_second_answer(instance) -> None:
    port, _ = instance
    with socket.create_connection(("127.0.0.1", port)) as s:
        # a page on another origin sending text/plain: refused (415) before its body is read
        s.sendall(STALLED.replace(b"Content-Type: application/json\r\n",
                                  b"Content-Type: text/plain\r\nOrigin: http://elsewhere.example\r\n"))
        s.settimeout(BODY_IDLE_S + 10)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 415") and answer.count(b"HTTP/1.1 ") == 1, answer


def test_stalled_clients_past_the_descriptor_limit_never_lock_out_health(instance) -> None:
    port, lines = instance
    before = sum(len(line) for line in lines)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    stalled: list[socket.socket] = []
    slowest = 0.0
    try:
        for batch in range(8):  # 400 stalled connections against room for ~170
            for _ in range(50):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(STALLED)
                stalled.append(s)
            slowest = max(slowest, _health_s(port))
        closed = 0
        for s in stalled:
            s.setblocking(False)
            try:
                got = s.recv(4096)
                closed += got == b"" or got.startswith(b"HTTP/1.1 408")
            except BlockingIOError:
                pass
        logged = sum(len(line) for line in lines) - before
    finally:
        for s in stalled:
            s.close()
    assert slowest < 0.5, f"/health took {slowest:.2f} s"
    assert closed >= 150, f"only {closed} of 400 stalled connections were closed"
    assert logged < 5_000, "".join(lines)[-3000:]
    assert not any("out of system resource" in line for line in lines)


def test_request_headers_over_16_kib_get_a_431(instance) -> None:
    port, _ = instance
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        s.settimeout(10)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"16 KiB" in answer
    small = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Ok": "a" * 8000}, timeout=5)
    assert small.status_code == 200


def test_accept_failures_are_one_line_per_ten_seconds() -> None:
    """A plain asyncio server out of descriptors logs its accept failures once, with a count
    (CPython logs one traceback per pending connection per tick: 170 MB in 13 s)."""
    port = free_port()
    script = textwrap.dedent(f"""
        import asyncio, logging, sys
        from koboldtui.api.fd_pressure import AcceptErrorLog
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        held = []
        class Hold(asyncio.Protocol):
            def connection_made(self, t): held.append(t)
        async def main():
            AcceptErrorLog().install(asyncio.get_running_loop())
            await asyncio.get_running_loop().create_server(Hold, "127.0.0.1", {port}, backlog=200)
            print("ready", flush=True)
            await asyncio.sleep(3)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy(), preexec_fn=_limit_fds(40))
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(80)]
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        for c in clients:
            c.close()
    lines = [line for line in err.splitlines() if line.strip()]
    assert any("cannot accept new connections" in line for line in lines), err[-2000:]
    assert len(lines) <= 3, err[-2000:]
    assert "Traceback" not in err

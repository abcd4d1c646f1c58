"""Run a real instance (Runtime + ASGI app + uvicorn) on 127.0.0.1 in a background thread.

Tests talk to it with real HTTP. One server per test module keeps the suite fast: the
model loads in about a second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from koboldtui.api.app import build_app
from koboldtui.config import ServeConfig
from koboldtui.runtime import Runtime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy (returned), or fail saying what never came."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def serve_process(model: Path, *args: str, preexec_fn: Callable[[], None] | None = None,
                  timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen[str], list[str]]]:
    """A real ``koboldtui serve`` child on a free loopback port with ``args``, ready (/health
    200); yields (base URL, process, its output lines so far) and terminates it at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "koboldtui.cli", "serve", "--model", str(model), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(), preexec_fn=preexec_fn,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers_health(base), timeout, "the instance to become ready")
    except AssertionError:
        proc.kill()
        raise AssertionError("instance never became ready:\n" + "".join(lines)) from None
    try:
        yield base, proc, lines
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers_health(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def served_in_thread(app: Any, host: str, port: int, *, timeout: float, why_not: Callable[[], str],
                     join_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread until /health says 200; yields the base URL and
    stops the server when the block ends. ``why_not`` words the failure when it never does."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(why_not())
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=join_s)


@contextlib.contextmanager
def running_instance(config: ServeConfig, model_path: Path, timeout: float = 60.0) -> Iterator[tuple[str, Runtime]]:
    """Yield (base_url, runtime) of a ready instance; shut it down on exit."""
    config = config.with_changes(port=config.port if config.port != 5001 else free_port())
    runtime = Runtime(config, model_path)
    with served_in_thread(build_app(runtime), config.host, config.port, timeout=timeout,
                          why_not=lambda: f"instance did not become ready: {runtime.state} {runtime.load_error}") as base:
        yield base, runtime

"""Run a real instance (Runtime + ASGI app + uvicorn) on 127.0.0.1 in a background thread.

Tests talk to it with real HTTP. One server per test module keeps the suite fast: the
model loads in about a second.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
def running_instance(config: ServeConfig, model_path: Path, timeout: float = 60.0) -> Iterator[tuple[str, Runtime]]:
    """Yield (base_url, runtime) of a ready instance; shut it down on exit."""
    config = config.with_changes(port=config.port if config.port != 5001 else free_port())
    runtime = Runtime(config, model_path)
    server = uvicorn.Server(uvicorn.Config(build_app(runtime), host=config.host, port=config.port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{config.host}:{config.port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"instance did not become ready: {runtime.state} {runtime.load_error}")
        time.sleep(0.05)
    try:
        yield base, runtime
    finally:
        server.should_exit = True
        thread.join(timeout=30)

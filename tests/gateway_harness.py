"""A real gateway (uvicorn in a thread) over real instances, for the gateway tests and the bench."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from koboldtui.gateway.app import GatewayConfig, build_gateway_app
from koboldtui.gateway.service import Gateway


class ShiftedClock:
    """time.monotonic plus an offset a test can advance (TTL without waiting minutes)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@contextlib.contextmanager
def running_gateway(gateway: Gateway, port: int, **config: object) -> Iterator[str]:
    """Serve ``gateway`` on 127.0.0.1:``port`` until the block ends; yields its base URL."""
    app = build_gateway_app(gateway, GatewayConfig(port=port, **config))  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)

"""A real gateway (uvicorn in a thread) over real instances, for the gateway tests and the bench."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from instance_harness import served_in_thread

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
    with served_in_thread(app, "127.0.0.1", port, timeout=30, why_not=lambda: "the gateway did not start",
                          join_s=15) as base:
        yield base

"""How long the Horde worker waits between tries, so a struggling server is not hammered.

``wait_or_event`` is the one way the worker waits: an injected sleep that an event
(a finished job, a stop, maintenance cleared) can cut short.

Two pacers, both deterministic given an injected ``rng``:
- ``Backoff``: exponential with "equal jitter" and a cap, for 429/5xx/timeouts/connection
  errors (HORDE.md: "retry with exponential backoff and jitter (cap a few minutes)").
- ``EmptyPopPacer``: empty pops slow down gently, like KoboldCpp's embedded worker
  (1 s for the first 10 empty pops, then 2 s until 25, then 3 s).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

Rng = Callable[[], float]


class Backoff:
    """Exponential backoff with jitter: attempt n waits in [d/2, d], d = min(cap, base * 2**n)."""

    def __init__(
        self,
        base_s: float = 2.0,
        cap_s: float = 300.0,
        rng: Rng = random.random,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng
        self.attempts = 0

    def next_delay(self, floor_s: float = 0.0) -> float:
        """The wait before the next try; each call counts one more failure."""
        ceiling = min(self.cap_s, self.base_s * (2.0**self.attempts))
        self.attempts += 1
        delay = ceiling / 2.0 + self._rng() * ceiling / 2.0
        return min(max(delay, floor_s), max(self.cap_s, floor_s))

    def reset(self) -> None:
        """A call succeeded: start again from the base delay."""
        self.attempts = 0


class EmptyPopPacer:
    """Gentle slow-down after pops that bring no job (KoboldCpp: 1 s, then 2 s, then 3 s)."""

    def __init__(
        self, steps: tuple[tuple[int, float], ...] = ((10, 1.0), (25, 2.0)), last_s: float = 3.0
    ):
        self._steps = steps
        self._last_s = last_s
        self.empty_in_a_row = 0

    def next_delay(self) -> float:
        """The wait after one more empty pop."""
        count = self.empty_in_a_row
        self.empty_in_a_row += 1
        for limit, delay in self._steps:
            if count < limit:
                return delay
        return self._last_s

    def reset(self) -> None:
        """A job came: the next empty pop waits the shortest time again."""
        self.empty_in_a_row = 0


async def wait_or_event(
    seconds: float | None,
    event: asyncio.Event | None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Wait ``seconds`` with ``sleep`` (None = no limit) or until ``event`` is set, if sooner."""
    if event is not None and event.is_set():
        return
    tasks: set[asyncio.Future[Any]] = set()
    if event is not None:
        tasks.add(asyncio.ensure_future(event.wait()))
    if seconds is not None:
        tasks.add(asyncio.ensure_future(sleep(seconds)))
    if not tasks:
        raise ValueError("wait_or_event needs a time limit or an event")
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()

"""The restart policy: when a failed instance this controller answers for is started again.

It keeps its own state only (the crash streak and the due time of each restart it owns,
on this process's monotonic clock); whether a restart is still wanted is the run
record's word (``run_book``): a stop or a dismiss drops it there, and the restart is then
refused when it is claimed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from koboldtui.control.backoff import Backoff


class RestartPolicy:
    """Exponential backoff per instance, and the restarts this controller has scheduled."""

    def __init__(self, backoff: Backoff | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._streak: dict[str, int] = {}
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    def delay_after_exit(self, name: str, ready_for_s: float | None) -> float:
        """The wait before restarting ``name`` after a failure that followed ``ready_for_s`` of service."""
        with self._lock:
            streak = self.backoff.streak_after_exit(self._streak.get(name, 0), ready_for_s)
            self._streak[name] = streak
        return self.backoff.delay(streak)

    def schedule(self, name: str, delay_s: float) -> None:
        """Restart ``name`` after ``delay_s`` (on this controller's clock)."""
        with self._lock:
            self._due[name] = self._clock() + max(0.0, delay_s)

    def scheduled(self, name: str) -> bool:
        with self._lock:
            return name in self._due

    def due(self, name: str) -> bool:
        """True once the restart of ``name`` is due (reads the clock once)."""
        now = self._clock()
        with self._lock:
            due = self._due.get(name)
        return due is not None and now >= due

    def remaining(self, name: str) -> float | None:
        """Seconds until the scheduled restart of ``name`` (None when none is scheduled here)."""
        with self._lock:
            due = self._due.get(name)
        return None if due is None else max(0.0, due - self._clock())

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._due)

    def taken(self, name: str) -> None:
        """The scheduled restart happened (or was refused): forget its due time, keep the streak."""
        with self._lock:
            self._due.pop(name, None)

    def forget(self, name: str) -> None:
        """A stop or a dismiss: no restart and a fresh streak."""
        with self._lock:
            self._due.pop(name, None)
            self._streak.pop(name, None)

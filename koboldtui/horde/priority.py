"""LocalPriorityGate: the person at the keyboard comes first (behaviour from KoboldCpp).

Every non-Horde generation request stamps the gate when it arrives and when it ends.
While ``now - last_stamp < window`` the Horde worker pops no new jobs; the job in hand
finishes. Each stamp restarts the window; once it runs out the worker resumes by
itself. The clock is injected so tests never sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]


class LocalPriorityGate:
    """Tracks the last local request and says whether the Horde may take new jobs."""

    def __init__(self, window_s: float = 20.0, clock: Clock = time.monotonic) -> None:
        if window_s < 0:
            raise ValueError("the local-priority window must be >= 0 seconds")
        self.window_s = float(window_s)
        self._clock = clock
        self._last_local: float | None = None
        self._active_local = 0
        self._lock = threading.Lock()

    def stamp(self) -> None:
        """A local request arrived or finished: (re)start the window."""
        with self._lock:
            self._last_local = self._clock()

    def local_started(self) -> None:
        """A local request began; the window stays shut until it ends and ``window_s`` passes."""
        with self._lock:
            self._active_local += 1
            self._last_local = self._clock()

    def local_finished(self) -> None:
        with self._lock:
            self._active_local = max(0, self._active_local - 1)
            self._last_local = self._clock()

    def remaining(self) -> float:
        """Seconds until the Horde may pop again; 0.0 when it may pop now."""
        with self._lock:
            if self._active_local > 0:
                return self.window_s
            if self._last_local is None:
                return 0.0
            left = self.window_s - (self._clock() - self._last_local)
            return max(0.0, left)

    def horde_may_pop(self) -> bool:
        return self.remaining() <= 0.0

    @property
    def active_local(self) -> int:
        return self._active_local

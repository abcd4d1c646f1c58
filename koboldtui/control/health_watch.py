"""Readiness and liveness of the processes a controller watches: starting → loading → ready, stalls, hangs, failed loads.

One step per child at a time: it looks (one short GET through the instance's kind),
moves the run record forward (``RunBook.became``), and says when the process must be
killed and why; the supervisor then kills it and records the failure. The clocks it
keeps (last progress, last look, last answer) live on the ``Child``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from koboldtui.control.children import Child
from koboldtui.control.kinds import Look
from koboldtui.control.probe import Health
from koboldtui.control.reattach import launch_url
from koboldtui.control.run_book import RunBook
from koboldtui.store.runs import RunRecord

# /health answers that count as "alive" for the hang watchdog (503 loading/stopping included)
ANSWERED = frozenset({Health.READY, Health.LOADING, Health.FAILED})
START_LOOK_TIMEOUT_S = 0.5  # a look at a starting instance (the supervisor polls several in a row)


class HealthWatch:
    """Decides what each look at a live child means; the settings are the supervisor's."""

    def __init__(
        self,
        runs: RunBook,
        *,
        clock: Callable[[], float],
        stall_timeout_s: float,
        health_interval_s: float,
        hang_timeout_s: float,
        health_timeout_s: float,
    ) -> None:
        self.runs = runs
        self._clock = clock
        self.stall_timeout_s = stall_timeout_s
        # a ready instance is probed every health_interval_s (each look waits at most
        # health_timeout_s) and killed when silent for hang_timeout_s
        self.health_interval_s, self.hang_timeout_s = health_interval_s, hang_timeout_s
        self.health_timeout_s = health_timeout_s
        self._lock = threading.Lock()  # guards the Child clocks between polling threads

    def step(self, child: Child, record: RunRecord) -> str | None:
        """One look at a live, starting/loading/ready child; the reason to kill it, or None."""
        if record.state == "ready":
            return self._watch_ready(child)
        look = self.probe(child, START_LOOK_TIMEOUT_S)
        now = self._clock()
        if look.health is Health.FAILED:
            return f"the model failed to load: {look.error or 'see the log'}"
        new = {Health.READY: "ready", Health.LOADING: "loading"}.get(look.health, record.state)
        with self._lock:
            grew = child.note_log_size()
            # answering /health ("loading") is progress: a big model may load for minutes
            if new != record.state or grew or look.health is Health.LOADING:
                child.progress_at = now
            stalled = now - child.progress_at > self.stall_timeout_s
        if new != record.state:
            if self.runs.became(child.name, child.token, new) and new == "ready":
                with self._lock:
                    child.ready_at = child.health_checked_at = child.answered_at = now
            return None
        if stalled:
            return (
                f"no progress for {self.stall_timeout_s:.0f} s while {record.state} "
                "(no /health answer, no log output); it was killed"
            )
        return None

    def probe(self, child: Child, timeout_s: float) -> Look:
        """One readiness look through the instance's kind."""
        look = child.kind.probe(launch_url(child.host, child.port), child.health_path, child.api_key, timeout_s)
        if look.path and not child.health_path:
            with self._lock:
                child.health_path = look.path  # found by trying the known paths: keep it
        return look

    def _watch_ready(self, child: Child) -> str | None:
        """The hang watchdog: a ready instance whose /health has been silent too long must go.

        Cheap between looks (a clock reading); a look is one short GET. Answering at all
        (200 ok, 503 loading or stopping) counts; no answer or an odd one does not.
        """
        now = self._clock()
        with self._lock:  # claim this look, so threads polling together probe once
            last_look = child.health_checked_at if child.health_checked_at is not None else child.progress_at
            if now - last_look < self.health_interval_s:
                return None
            child.health_checked_at = now
        look = self.probe(child, self.health_timeout_s)
        with self._lock:
            if look.health in ANSWERED:
                child.answered_at = now
                return None
            answered_at = child.answered_at if child.answered_at is not None else child.progress_at
            if now - answered_at < self.hang_timeout_s:
                return None
        if self.runs.get(child.name).state != "ready":
            return None  # a stop came in meanwhile
        return (
            f"stopped answering {child.health_path or '/health'} for "
            f"{self.hang_timeout_s:.0f} s; it was killed"
        )

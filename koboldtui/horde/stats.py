"""What the Horde worker did this session, kept apart from the loop so status is a plain dict.

Counts (done/faulted/dropped), kudos (per-submit ``reward`` this session; totals and
username from ``find_user``, refreshed at most every ``user_refresh_s``), the speed of
Horde jobs, the server's last ``skipped`` reasons, the last error in words with its time
and the last dropped job.

``last_error`` describes a condition, not history: each error is recorded with the
``source`` it came from (pop, submit, job, user, maintenance) and cleared when that
source next succeeds, so the status never shows a pop error after the Horde came back.
A drop is an event: it stays in ``last_drop`` (and ``jobs_dropped``) after the error clears.

``skipped`` is only what the Horde's pop answer carries. AI-Horde 5.1.x filters most
passed-by requests in its database query and then reports ``{}``: an empty ``skipped``
means "the Horde did not say", not "nothing was passed by".
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

HORDE_STATES = (
    "off",  # no worker on this instance
    "starting",  # start() called, no pop answered yet
    "idle",  # the last pop was empty; waiting before the next
    "popping",  # a pop is in flight
    "generating",  # at least one Horde job is running
    "paused_local",  # a local request is running or was recent: no new pops (remaining_s)
    "maintenance",  # the Horde has the worker in maintenance; polling slowly
    "backoff",  # the Horde or the network failed; waiting before a retry
    "error",  # stopped by a fatal error (see last_error); local serving goes on
    "stopping",  # graceful stop: no new pops, finishing jobs in hand (stop_jobs_left, stop_eta_s)
    "stopped",  # stopped by request
)


@dataclass
class HordeStats:
    """Mutable counters of one worker session (touched only from the event loop)."""

    jobs_done: int = 0
    jobs_faulted: int = 0
    jobs_dropped: int = 0
    kudos_session: float = 0.0
    kudos_total: float | None = None
    username: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: float | None = None  # on the worker's (injected) clock
    last_error_wall: float | None = None  # unix time, for people
    last_error_source: str | None = None
    last_drop: dict[str, Any] | None = None
    pops: int = 0
    empty_pops: int = 0
    tokens_generated: int = 0
    user_refreshed_at: float | None = None
    user_refresh_s: float = 60.0
    _speeds: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    _full_load_speeds: deque[float] = field(default_factory=lambda: deque(maxlen=10))
    # The panel's Horde view lists the last jobs (read-only; added by the panel's issue 12).
    recent_jobs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))
    _unsubmitted: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))

    def record_speed(self, tokens: int, tokens_per_s: float, *, full_load: float | None = None) -> None:
        """One finished Horde job's generation speed (kept for the last 10 jobs), and what a
        job would get with every Horde thread busy (``full_load``; default: the same)."""
        self.tokens_generated += max(0, tokens)
        if tokens_per_s > 0:
            self._speeds.append(tokens_per_s)
            self._full_load_speeds.append(full_load if full_load is not None else tokens_per_s)
        self._unsubmitted.append({"tokens": max(0, tokens), "tokens_per_s": round(tokens_per_s, 2)})

    @property
    def tokens_per_s(self) -> float:
        """Median speed of the last Horde jobs (median: a shared VM has rare 10x stalls)."""
        return _median(self._speeds)

    @property
    def full_load_tokens_per_s(self) -> float:
        """Median speed one job gets with every Horde thread busy: what max_length is sized by."""
        return _median(self._full_load_speeds)

    def record_submitted(self, state: str, reward: float, *, model: str = "", held_s: float | None = None,
                         ttl_s: float | None = None) -> None:
        """The Horde took a result: count it by its state and add its kudos.

        ``held_s`` is what the worker knows of the job's time: pop to submit on our side. How long
        the requester waited is not in the pop answer (HORDE.md), so it is never guessed here.
        """
        if state == "ok":
            self.jobs_done += 1
        else:
            self.jobs_faulted += 1
        self.kudos_session += reward
        job = self._unsubmitted.popleft() if state == "ok" and self._unsubmitted else {"tokens": 0, "tokens_per_s": 0.0}
        self.recent_jobs.append({
            **job, "state": state, "kudos": round(reward, 2), "model": model,
            "held_s": None if held_s is None else round(held_s, 1),
            "ttl_s": None if ttl_s is None else round(ttl_s, 1),
        })

    def record_skipped(self, skipped: Any) -> None:
        """Keep the server's latest non-empty reasons why requests passed this worker by."""
        if isinstance(skipped, dict):
            reasons = {
                str(k): int(v) for k, v in skipped.items() if isinstance(v, (int, float)) and v
            }
            if reasons:
                self.skipped = reasons

    def record_error(self, text: str, now: float, source: str = "other") -> None:
        """Keep ``text`` as the last error until ``source`` succeeds again (``clear_error``)."""
        self.last_error = text
        self.last_error_at = now
        self.last_error_wall = time.time()
        self.last_error_source = source

    def clear_error(self, *sources: str) -> None:
        """The condition behind the last error is over: forget it if it came from ``sources``."""
        if self.last_error is not None and self.last_error_source in sources:
            self.last_error = self.last_error_at = self.last_error_wall = None
            self.last_error_source = None

    def record_drop(self, horde_id: str, reason: str, now: float) -> None:
        """A job given up: count it and keep which and why (kept after the error clears);
        ``reason`` names no job id (``last_drop`` carries it)."""
        self.jobs_dropped += 1
        self.last_drop = {"id": horde_id, "reason": reason, "at": round(time.time(), 1)}
        self.record_error(f"Horde job {horde_id} dropped: {reason}", now, "submit")

    def user_due(self, now: float) -> bool:
        """Whether find_user may be called again (at most every ``user_refresh_s``)."""
        return self.user_refreshed_at is None or now - self.user_refreshed_at >= self.user_refresh_s

    def record_user(self, data: dict[str, Any], now: float) -> None:
        self.user_refreshed_at = now
        if isinstance(data.get("username"), str):
            self.username = data["username"]
        kudos = data.get("kudos")
        if isinstance(kudos, (int, float)) and not isinstance(kudos, bool):
            self.kudos_total = float(kudos)

    def counters(self, now: float | None = None) -> dict[str, Any]:
        """The stats part of the worker's status (``now``: the worker's clock, for the age)."""
        age = None
        if self.last_error_at is not None and now is not None:
            age = round(max(0.0, now - self.last_error_at), 1)
        return {
            "jobs_done": self.jobs_done,
            "jobs_faulted": self.jobs_faulted,
            "jobs_dropped": self.jobs_dropped,
            "kudos_session": round(self.kudos_session, 2),
            "kudos_total": self.kudos_total,
            "username": self.username,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "tokens_generated": self.tokens_generated,
            "skipped": dict(self.skipped),
            "last_error": self.last_error,
            "last_error_at": round(self.last_error_wall, 1) if self.last_error_wall else None,
            "last_error_age_s": age,
            "last_drop": dict(self.last_drop) if self.last_drop else None,
            "pops": self.pops,
            "empty_pops": self.empty_pops,
            "recent_jobs": list(self.recent_jobs),
        }


def off_status(window_s: float = 20.0, remaining_s: float = 0.0) -> dict[str, Any]:
    """The ``horde`` object of an instance that runs no worker (same keys as a worker's status)."""
    return {
        "state": "off",
        "window_s": window_s,
        "remaining_s": round(remaining_s, 1),
        **HordeStats().counters(),
        "worker_id": None,
        "worker_name": None,
        "jobs_in_progress": 0,
        "uptime_s": 0.0,
        "maintenance_message": None,
        "backoff_s": 0.0,
        "stop_eta_s": None,
        "threads": 0,
        "models": [],
        "max_length": 0,
        "max_context_length": 0,
        "bridge_agent": None,
    }


def _median(values: Any) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2.0

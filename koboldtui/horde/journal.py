"""The Horde jobs an instance holds, kept on disk, so a restart hands back what a killed process held.

A job in hand when the instance is killed (kill -9, OOM, the watchdog) would otherwise
sit on the Horde until its ttl runs out, and its requester waits for nothing. Each job id
is written here when popped and removed once submitted or dropped; a worker that starts
finds the leftovers of its predecessor and submits them ``faulted`` while their ttl lasts,
so the Horde gives them to another worker at once.

One small JSON file per instance (``<data>/run/<name>.horde-jobs.json``), replaced
atomically; only the instance's own event loop writes it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class JobJournal:
    """Job id → ttl deadline (unix time) of the jobs in hand; ``None`` path = keep nothing."""

    def __init__(self, path: Path | None, wall: Callable[[], float] = time.time) -> None:
        self.path = path
        self._wall = wall
        self._jobs: dict[str, float] = {}

    def add(self, horde_id: str, ttl_left_s: float) -> None:
        """A job is in hand: remember it until ``remove``."""
        self._jobs[horde_id] = self._wall() + ttl_left_s
        self._save()

    def remove(self, horde_id: str) -> None:
        """The job was submitted (or given up): forget it."""
        if self._jobs.pop(horde_id, None) is not None:
            self._save()

    def take_leftovers(self) -> dict[str, float]:
        """Jobs a previous process left in hand, with the seconds of ttl each has left (>0 only).

        They stay in the journal (now ours) until the caller removes them.
        """
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        now = self._wall()
        left = {str(k): float(v) - now for k, v in data.items()
                if isinstance(v, (int, float)) and float(v) > now} if isinstance(data, dict) else {}
        self._jobs.update({k: now + s for k, s in left.items()})
        self._save()
        return left

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self._jobs), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a full or read-only disk must not stop the jobs themselves
            tmp.unlink(missing_ok=True)
            log.warning("could not record the Horde jobs in hand in %s: %s", self.path, exc)

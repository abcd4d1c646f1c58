"""Watching servers by HTTP only: remote instances (never started here) and what any instance says it is.

A remote instance's state is whatever its last look found: ready (or loading, for a
koboldtui that is still loading its model) when it answers, ``unreachable`` with the
reason when it does not. Looks are cached for ``ttl_s`` so ``ps``, the panel's poll and a
snapshot asked for twice in a row cost one round of GETs, and the detected flavour is
kept until the server stops answering (then it is detected again: another server may
have taken the port).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from koboldtui.control.flavour import KOBOLDTUI, FlavourFacts, Unreachable, read_facts
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceSnapshot, InstanceState


@dataclass(frozen=True)
class Look:
    """One look at a server: its facts when it answered, else why it did not."""

    facts: FlavourFacts | None
    reason: str | None
    at: float  # monotonic


class FlavourWatch:
    """The latest look at each server by instance name; safe from several threads."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = 1.0,
        timeout_s: float = 1.5,
        reader: Callable[..., FlavourFacts] = read_facts,
    ) -> None:
        self._clock, self.ttl_s, self.timeout_s = clock, ttl_s, timeout_s
        self._read = reader
        self._looks: dict[str, Look] = {}
        self._flavours: dict[str, str] = {}
        self._servers: dict[str, tuple[str, int | None]] = {}  # (url, pid) each look was for
        self._lock = threading.Lock()

    def look(
        self, name: str, base_url: str, api_key: str | None = None, pid: int | None = None
    ) -> Look:
        """A fresh-enough look at ``name`` (one round of GETs at most every ``ttl_s``).

        A new URL or process (an edit, a restart) is another server: detected afresh.
        """
        now = self._clock()
        with self._lock:
            if self._servers.get(name) != (base_url, pid):
                self._servers[name] = (base_url, pid)
                self._looks.pop(name, None)
                self._flavours.pop(name, None)
            cached = self._looks.get(name)
            flavour = self._flavours.get(name)
        if cached is not None and now - cached.at < self.ttl_s:
            return cached
        try:
            facts = self._read(base_url, flavour=flavour, api_key=api_key, timeout_s=self.timeout_s)
            look = Look(facts, None, now)
        except Unreachable as exc:
            look = Look(None, str(exc), now)
        with self._lock:
            self._looks[name] = look
            if look.facts is not None:
                self._flavours[name] = look.facts.flavour
            else:
                self._flavours.pop(name, None)
        return look

    def latest(self, name: str) -> Look | None:
        """The last look taken (by anyone), without a new one."""
        with self._lock:
            return self._looks.get(name)

    def forget(self, name: str) -> None:
        """Drop what is known of ``name`` (its spec changed, or it was stopped)."""
        with self._lock:
            self._looks.pop(name, None)
            self._flavours.pop(name, None)
            self._servers.pop(name, None)


_KOBOLDTUI_STATES = {"loading": InstanceState.LOADING, "stopping": InstanceState.STOPPING}


def remote_snapshot(spec: InstanceSpec, look: Look) -> InstanceSnapshot:
    """How a remote instance is doing, from one look (no pid: it is not a process of this box)."""
    port = urlsplit(spec.url).port or (443 if spec.url.startswith("https") else 80)
    facts = look.facts
    if facts is None:
        state, error = InstanceState.UNREACHABLE, look.reason
    else:
        info = (facts.status or {}).get("instance") or {}
        state = InstanceState.READY
        if facts.flavour == KOBOLDTUI:  # no status yet: its model is still loading
            default = InstanceState.READY if facts.status is not None else InstanceState.LOADING
            state = _KOBOLDTUI_STATES.get(str(info.get("state")), default)
        error = None
    uptime = None
    if facts is not None and facts.status is not None:
        value = (facts.status.get("instance") or {}).get("uptime_s")
        uptime = float(value) if isinstance(value, (int, float)) else None
    return InstanceSnapshot(
        name=spec.name,
        state=state,
        port=port,
        pid=None,
        model=(facts.model if facts is not None and facts.model else spec.url),
        gpus="remote",
        restarts=0,
        uptime_s=uptime,
        last_error=error,
        log_path=None,
        kind=spec.kind,
    )


def facts_for(
    watch: FlavourWatch, spec: InstanceSpec, snapshot: InstanceSnapshot, api_key: str | None
) -> FlavourFacts | None:
    """What an answering instance (any kind) says it is; None while it does not answer."""
    if snapshot.state not in (InstanceState.READY, InstanceState.LOADING):
        return None
    look = watch.look(spec.name, spec.base_url(), api_key, snapshot.pid)
    return look.facts

"""Watching servers by HTTP only: remote instances (never started here) and what any instance says it is.

A remote instance's state is whatever its last look found: ready (or loading, for a
koboldtui that is still loading its model) when it answers, ``unreachable`` with the
reason when it does not. Looks are cached for ``ttl_s`` so ``ps``, the panel's poll and a
snapshot asked for twice in a row cost one round of GETs, and the detected flavour is
kept until the server stops answering (then it is detected again: another server may
have taken the port).

Nobody waits on a remote server to show state: ``BackgroundLooks`` takes each look on a
thread of its own (one at a time per instance) and the supervisor reads the last one,
with its age; an unreachable server costs its timeout on that thread only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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


class BackgroundLooks:
    """Looks at servers on daemon threads; ``latest`` never waits, ``settle`` waits a bounded time.

    ``on_look`` hears every finished look (the supervisor writes it to the run record, so
    another process, e.g. ``koboldtui ps``, reads the panel's last look with its age).
    """

    def __init__(
        self,
        watch: FlavourWatch,
        *,
        on_look: Callable[[str, Look], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watch = watch
        self._on_look = on_look
        self._clock = clock
        self._busy: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def request(self, name: str, base_url: str, api_key: str | None = None) -> None:
        """Start a look at ``name`` unless one is running or the last one is fresh enough."""
        last = self.watch.latest(name)
        if last is not None and self._clock() - last.at < self.watch.ttl_s:
            return
        with self._lock:
            running = self._busy.get(name)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._look, args=(name, base_url, api_key), daemon=True,
                name=f"remote-look-{name}",
            )
            self._busy[name] = thread
        thread.start()

    def _look(self, name: str, base_url: str, api_key: str | None) -> None:
        look = self.watch.look(name, base_url, api_key)
        if self._on_look is not None:
            try:
                self._on_look(name, look)
            except Exception:  # noqa: BLE001 - a record that cannot be written is only advice lost
                pass

    def latest(self, name: str) -> Look | None:
        """The last look at ``name`` (None before the first one finished); never waits."""
        return self.watch.latest(name)

    def settle(self, names: list[str], wait_s: float) -> None:
        """Wait up to ``wait_s`` in all for the looks in flight for ``names`` (``ps`` shows fresh ones when quick)."""
        deadline = time.monotonic() + wait_s
        for name in names:
            with self._lock:
                thread = self._busy.get(name)
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))


def look_age(look: Look, now: float) -> float:
    """Seconds since ``look`` was taken."""
    return max(0.0, now - look.at)


_KOBOLDTUI_STATES = {"loading": InstanceState.LOADING, "stopping": InstanceState.STOPPING}


def remote_snapshot(spec: InstanceSpec, look: Look, *, age_s: float | None = None) -> InstanceSnapshot:
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
        look_age_s=age_s,
    )


def unlooked_snapshot(
    spec: InstanceSpec, state: InstanceState, error: str | None, age_s: float | None
) -> InstanceSnapshot:
    """A remote instance this process has not looked at yet: the last look any controller recorded, or none."""
    snap = remote_snapshot(spec, Look(None, error or "not looked at yet", 0.0), age_s=age_s)
    return replace(snap, state=state, last_error=error if state is InstanceState.UNREACHABLE else None)


def facts_for(
    watch: FlavourWatch, spec: InstanceSpec, snapshot: InstanceSnapshot, api_key: str | None
) -> FlavourFacts | None:
    """What an answering instance (any kind) says it is; None while it does not answer."""
    if snapshot.state not in (InstanceState.READY, InstanceState.LOADING):
        return None
    if spec.is_remote:  # looked at in the background: the last look, never a wait
        latest = watch.latest(spec.name)
        return latest.facts if latest is not None else None
    look = watch.look(spec.name, spec.base_url(), api_key, snapshot.pid)
    return look.facts

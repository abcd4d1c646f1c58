"""What the gateway can route to: every saved instance, its pool name, and how it is doing right now.

The store is the source of truth for what exists; this module only adds what the gateway
learns by watching (health, load, when it was last used) and re-reads the store when asked,
so an instance added in the panel is routable without restarting the gateway.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koboldtui.control.secrets import InstanceSecrets
from koboldtui.control.spec import KIND_COMMAND, KIND_REMOTE, InstanceSpec
from koboldtui.models.bundled import BUNDLED_MODEL_ALIAS
from koboldtui.store.instances import InstanceStore

# what /v1/models says of an instance
READY, LOADING, STOPPED, UNREACHABLE = "ready", "loading", "stopped", "unreachable"
# a command instance running the gateway itself (`gateway enable`) is not a model
GATEWAY_COMMAND = re.compile(r"koboldtui(?:\.cli)?\s+gateway\b")


def default_alias(spec: InstanceSpec) -> str:
    """The pool name an instance answers to when none was saved: the model file's stem."""
    if spec.alias:
        return spec.alias
    if spec.kind == KIND_REMOTE or not spec.model:
        return spec.name
    if spec.model == BUNDLED_MODEL_ALIAS:
        return BUNDLED_MODEL_ALIAS
    return Path(spec.model).stem or spec.name


@dataclass
class Backend:
    """One instance as the gateway sees it: where it is, its pool, and what the watcher last saw."""

    name: str
    alias: str
    kind: str
    base_url: str
    api_key: str | None
    ttl_s: float  # 0: never stopped for idleness
    pin: bool
    spec: InstanceSpec
    state: str = STOPPED
    reason: str | None = None  # why it is not ready (last probe, last failed start)
    in_flight: int = 0  # requests this gateway has open on it
    busy: int = 0  # slots busy + queued, from its status (Horde jobs included)
    horde_busy: int = 0  # of those, Horde jobs
    other_busy: int = 0  # of those, neither Horde nor ours at the look: direct clients, another gateway
    parallel: int = 1
    last_used: float = 0.0  # monotonic
    out_of_rotation_until: float = 0.0  # monotonic: a failed request keeps it out until probed back
    requests: int = 0
    errors: int = 0

    @property
    def startable(self) -> bool:
        """Only local instances can be started on demand; a remote one is someone else's."""
        return self.kind != KIND_REMOTE

    def load(self) -> int:
        """How busy it is for routing: our open requests (exact, now), plus what its last status showed
        beyond ours (Horde jobs, other clients). Its own count alone would lag by a look and
        count our finished requests as busy."""
        return self.in_flight + self.horde_busy + self.other_busy

    def in_rotation(self, now: float) -> bool:
        return self.state == READY and now >= self.out_of_rotation_until

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "kind": self.kind, "url": self.base_url,
                "state": self.state, "reason": self.reason, "in_flight": self.in_flight,
                "busy": self.busy, "horde_busy": self.horde_busy, "ttl_min": self.ttl_s / 60.0,
                "pin": self.pin, "requests": self.requests, "errors": self.errors}


def is_gateway_spec(spec: InstanceSpec) -> bool:
    """The gateway registered as a supervised command instance (``gateway enable``)."""
    return spec.kind == KIND_COMMAND and GATEWAY_COMMAND.search(spec.command) is not None


@dataclass
class BackendTable:
    """Every routable instance by name, re-read from the store; the watcher's facts survive a re-read."""

    store: InstanceStore
    secrets: InstanceSecrets
    clock: Callable[[], float] = time.monotonic
    _backends: dict[str, Backend] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> list[Backend]:
        """Re-read the saved instances (a new one appears, a removed one goes, edits apply)."""
        fresh: dict[str, Backend] = {}
        for stored in self.store.all():
            try:
                spec = InstanceSpec.from_dict(stored.spec)
            except (TypeError, ValueError):
                continue  # a spec this version cannot read is not routable
            if is_gateway_spec(spec):
                continue
            old = self._backends.get(spec.name)
            saved = dict(
                alias=default_alias(spec), kind=spec.kind, base_url=spec.base_url(),
                api_key=self.secrets.get(spec.name).get("api_key") or None,
                ttl_s=max(0.0, float(spec.ttl_min or 0.0)) * 60.0, pin=bool(spec.pin), spec=spec)
            if old is not None:  # the same object: requests in flight hold it and count on it
                for attr, value in saved.items():
                    setattr(old, attr, value)
                backend = old
            else:
                backend = Backend(name=spec.name, **saved)  # type: ignore[arg-type]
            fresh[spec.name] = backend
        with self._lock:
            self._backends = fresh
        return list(fresh.values())

    def all(self) -> list[Backend]:
        with self._lock:
            return sorted(self._backends.values(), key=lambda b: b.name)

    def get(self, name: str) -> Backend | None:
        with self._lock:
            return self._backends.get(name)

    def pools(self) -> dict[str, list[Backend]]:
        """Alias → its instances (a pool of one is still a pool)."""
        pools: dict[str, list[Backend]] = {}
        for backend in self.all():
            pools.setdefault(backend.alias, []).append(backend)
        return pools

    def resolve(self, model: str) -> list[Backend]:
        """The instances a model name means: an instance's name first, else a pool's alias."""
        backend = self.get(model)
        if backend is not None:
            return [backend]
        return self.pools().get(model, [])

    def known_names(self) -> list[str]:
        """Every name a client may ask for (instances, then pools that are not also an instance name)."""
        names = [b.name for b in self.all()]
        return names + sorted(a for a in self.pools() if a not in names)

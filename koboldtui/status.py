"""``InstanceStatus``: the one snapshot of an instance, as ``GET /api/koboldtui/status`` serves it.

The instance builds it (``to_dict``); the supervisor and the panel parse it back
(``from_dict``) — one type for both ends so the fields cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from koboldtui.engine.types import (
    EngineSnapshot,
    EngineTotals,
    Origin,
    QueueEntry,
    RequestState,
)


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    version: str
    pid: int
    host: str
    port: int
    launch_token: str | None
    started_at: float  # unix time
    uptime_s: float
    state: str  # "loading" | "ready" | "stopping"
    threads: int
    gpu_layers: int
    cuda_visible_devices: str | None  # as the process received it


@dataclass(frozen=True)
class InstanceStatus:
    instance: InstanceInfo
    engine: EngineSnapshot
    horde: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {"instance": dict(self.instance.__dict__)}
        data.update(self.engine.to_dict())
        data["horde"] = dict(self.horde)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceStatus:
        queue = tuple(
            QueueEntry(
                genkey=q["genkey"],
                origin=Origin(q["origin"]),
                state=RequestState(q["state"]),
                prompt_tokens=int(q["prompt_tokens"]),
                tokens=int(q["tokens"]),
                tokens_per_s=float(q["tokens_per_s"]),
                age_s=float(q["age_s"]),
                cached_tokens=int(q.get("cached_tokens", 0)),
            )
            for q in data.get("queue", [])
        )
        engine = EngineSnapshot(
            model_name=data["model"]["name"],
            model_path=data["model"]["path"],
            n_ctx=int(data["ctx"]),
            n_ctx_per_seq=int(data["ctx_per_seq"]),
            n_batch=int(data["n_batch"]),
            n_ubatch=int(data["n_ubatch"]),
            parallel=int(data["parallel"]),
            slots_busy=int(data["slots_busy"]),
            queue_depth=int(data["queue_depth"]),
            queue=queue,
            totals=EngineTotals(**data.get("totals", {})),
        )
        return cls(
            instance=InstanceInfo(**data["instance"]),
            engine=engine,
            horde=dict(data.get("horde") or {}),
        )

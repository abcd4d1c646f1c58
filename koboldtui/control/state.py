"""Instance states and snapshots: the words ``ps``, ``up`` and the panel use for how an instance is doing.

``InstanceSnapshot`` is immutable (safe to hand to the UI thread); it is made from the one
run record every controller shares (``koboldtui.store.runs.RunRecord``).
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from typing import Any

from koboldtui.control.spec import InstanceSpec, gpus_label
from koboldtui.store.runs import RunRecord


class StartError(RuntimeError):
    """An instance could not be started or did not become ready; the message says why and what to do."""


class InstanceState(str, enum.Enum):
    """stopped → starting → loading → ready → stopping → stopped; failed holds the exit and log tail."""

    STOPPED = "stopped"
    STARTING = "starting"  # process spawned, not answering HTTP yet
    LOADING = "loading"  # /health answers 503: the model is loading
    READY = "ready"  # /health answers 200 ok
    STOPPING = "stopping"
    FAILED = "failed"
    UNREACHABLE = "unreachable"  # a remote instance that does not answer (last_error says why)


RUNNING = frozenset(
    {InstanceState.STARTING, InstanceState.LOADING, InstanceState.READY, InstanceState.STOPPING}
)


@dataclass(frozen=True)
class InstanceSnapshot:
    """One instance at one moment, as ``koboldtui ps --json`` prints it (plus where it logs)."""

    name: str
    state: InstanceState
    port: int
    pid: int | None
    model: str
    gpus: str
    restarts: int
    uptime_s: float | None
    last_error: str | None
    log_path: str | None = None
    restart_in_s: float | None = None  # a restart is scheduled this many seconds from now
    kind: str = "serve"  # "serve" | "command" | "remote" (InstanceSpec.kind)

    started_by: str | None = None  # "user" | "up" | "gateway": who started the running instance
    look_age_s: float | None = None  # a remote instance: how old the look this state comes from is

    @classmethod
    def from_record(
        cls,
        spec: InstanceSpec,
        record: RunRecord,
        *,
        wall_now: float,
        log_path: str | None,
        restart_in_s: float | None = None,
    ) -> InstanceSnapshot:
        """The shared run record of ``spec`` as a snapshot (pid and uptime only while it runs)."""
        try:
            state = InstanceState(record.state)
        except ValueError:
            state = InstanceState.STOPPED
        running = state in RUNNING
        return cls(
            name=spec.name,
            state=state,
            port=record.port if running and record.port else spec.port,
            pid=record.pid if running else None,
            model=spec.model,
            gpus=gpus_label(spec.gpus),
            restarts=record.restarts,
            uptime_s=(
                max(0.0, wall_now - record.started_at)
                if running and record.started_at is not None
                else None
            ),
            last_error=record.last_error if state is InstanceState.FAILED else None,
            log_path=log_path,
            restart_in_s=restart_in_s if state is InstanceState.FAILED else None,
            kind=spec.kind,
            started_by=record.started_by if running else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``ps --json`` object (a remote instance's also says how old the look is)."""
        extra = {}
        if self.kind == "remote":
            extra["look_age_s"] = None if self.look_age_s is None else round(self.look_age_s, 1)
        return {
            "name": self.name,
            "state": self.state.value,
            "port": self.port,
            "pid": self.pid,
            "model": self.model,
            "gpus": self.gpus,
            "restarts": self.restarts,
            "uptime_s": None if self.uptime_s is None else round(self.uptime_s, 1),
            "last_error": self.last_error,
            "kind": self.kind,
            "started_by": self.started_by,
        } | extra


def describe_exit(code: int | None) -> str:
    """An exit status in words: 'exited with code 1', 'killed by SIGKILL', or unknown."""
    if code is None:
        return "exited (its exit code is unknown: another controller started it)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def with_log_tail(message: str, tail: list[str]) -> str:
    """A failure message followed by the last log lines, which usually say the real cause."""
    if not tail:
        return message
    return message + "\nlast log lines:\n" + "\n".join("  " + line for line in tail)

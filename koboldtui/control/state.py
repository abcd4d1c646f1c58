"""Instance states and snapshots: the words ``ps``, ``up`` and the panel use for how an instance is doing.

``InstanceSnapshot`` is immutable (safe to hand to the UI thread); ``ManagedInstance`` is
the supervisor's private, mutable record of one child it watches.
"""

from __future__ import annotations

import enum
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koboldtui.control.process import pid_alive, still_ours
from koboldtui.control.runstate import RunState
from koboldtui.control.spec import InstanceSpec, gpus_label


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
    started_by: str = "user"  # "user" | "gateway": who asked this controller to start it

    @classmethod
    def at_rest(cls, spec: InstanceSpec, saved: RunState, log_path: str | None) -> InstanceSnapshot:
        """An instance no controller runs: stopped, or failed as the last controller saw it."""
        failed = saved.state == InstanceState.FAILED.value
        return cls(
            name=spec.name,
            state=InstanceState.FAILED if failed else InstanceState.STOPPED,
            port=spec.port,
            pid=None,
            model=spec.model,
            gpus=gpus_label(spec.gpus),
            restarts=saved.restarts,
            uptime_s=None,
            last_error=saved.last_error if failed else None,
            log_path=log_path,
            kind=spec.kind,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``ps --json`` object."""
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
        }


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


@dataclass
class ManagedInstance:
    """The supervisor's record of one child (mutated only under the supervisor's lock)."""

    name: str
    state: InstanceState
    pid: int | None
    port: int
    token: str
    host: str
    started_at: float  # wall clock
    popen: subprocess.Popen[bytes] | None  # None when adopted (not our child)
    log_path: Path
    restarts: int
    progress_at: float  # monotonic: last state change or log growth
    policy: str
    api_key: str | None
    model: str
    gpus: str
    streak: int = 0  # consecutive failures, for backoff
    streak_ready_at: float | None = None  # monotonic time it became ready
    # the hang watchdog (ready instances): monotonic times of its last /health look and answer;
    # None means "since progress_at" (it just became ready, or was adopted)
    health_checked_at: float | None = None
    answered_at: float | None = None
    restart_at: float | None = None  # monotonic time of a scheduled restart
    stop_requested: bool = False
    exit_code: int | None = None
    last_error: str | None = None
    log_size: int = field(default=-1)
    kind: str = "serve"
    # None: our own /health; a command instance's path ("" until the first known path answers 200)
    health_path: str | None = None
    started_by: str = "user"  # "user" | "gateway" (Supervisor.start's started_by)

    @classmethod
    def for_spec(
        cls,
        spec: InstanceSpec,
        *,
        state: InstanceState,
        log_path: Path,
        started_at: float,
        progress_at: float,
        pid: int | None = None,
        port: int | None = None,
        token: str = "",
        popen: subprocess.Popen[bytes] | None = None,
        restarts: int = 0,
        api_key: str | None = None,
    ) -> ManagedInstance:
        """A record for one launch (or attempt) of ``spec``."""
        return cls(
            name=spec.name,
            state=state,
            pid=pid,
            port=spec.port if port is None else port,
            token=token,
            host=spec.host,
            started_at=started_at,
            popen=popen,
            log_path=log_path,
            restarts=restarts,
            progress_at=progress_at,
            policy=spec.restart,
            api_key=api_key,
            model=spec.model,
            gpus=gpus_label(spec.gpus),
            kind=spec.kind,
            health_path=None if spec.kind == "serve" else spec.health,
        )

    def exit_code_now(self) -> int | None | bool:
        """False while running; else the exit code (None when not our child and so unknown)."""
        if self.popen is not None:
            code = self.popen.poll()
            return False if code is None else code
        if not pid_alive(self.pid):
            return None
        if self.token and not still_ours(self.pid, self.token):
            return None  # the pid now belongs to someone else: our instance is gone
        return False

    def note_log_size(self) -> bool:
        """True when the log grew since the last look (loading progress without HTTP)."""
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return False
        grew = self.log_size >= 0 and size > self.log_size
        self.log_size = size
        return grew

    def snapshot(self, wall_now: float, mono_now: float) -> InstanceSnapshot:
        """Immutable view for callers; uptime counts from the launch."""
        running = self.state in RUNNING
        return InstanceSnapshot(
            name=self.name,
            state=self.state,
            port=self.port,
            pid=self.pid if running else None,
            model=self.model,
            gpus=self.gpus,
            restarts=self.restarts,
            uptime_s=max(0.0, wall_now - self.started_at) if running else None,
            last_error=self.last_error if self.state is InstanceState.FAILED else None,
            log_path=str(self.log_path),
            restart_in_s=None if self.restart_at is None else max(0.0, self.restart_at - mono_now),
            kind=self.kind,
            started_by=self.started_by,
        )

"""The control plane: start, watch, stop and restart instance processes, and adopt ones already running.

A plain library (no Textual): ``koboldtui start/stop/ps/up`` call it from the main thread,
the panel from worker threads. Methods that wait (``start(wait=True)``, ``stop``) block
the calling thread only; ``poll()`` advances every state machine one step and never
waits long, so a loop or a timer drives health, stall detection and restart backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from koboldtui.control import logs as logfiles
from koboldtui.control.backoff import Backoff
from koboldtui.control.command import probe_command_health
from koboldtui.control.gpu_plan import GpuPlanner
from koboldtui.control.launcher import CommandBuilder
from koboldtui.control.launching import ORPHAN_KILL_GRACE_S, LaunchBusyError  # noqa: F401 - re-exported
from koboldtui.control.probe import Health, probe_health_detail
from koboldtui.control.process import pid_alive, serve_command, terminate_group
from koboldtui.control.reattach import launch_url
from koboldtui.control.restarts import SupervisorRestarts
from koboldtui.control.state import (
    RUNNING,
    InstanceSnapshot,
    InstanceState,
    ManagedInstance,
    StartError,
)
from koboldtui.paths import AppPaths
from koboldtui.stop_budget import supervisor_grace_s
from koboldtui.store.instances import InstanceStore

__all__ = [
    "InstanceSnapshot",
    "InstanceState",
    "LaunchBusyError",
    "StartError",
    "StopReport",
    "Supervisor",
]

# SIGKILL only after the instance's whole drain (stop_budget): HTTP requests, then Horde jobs
HORDE_STOP_GRACE_S = supervisor_grace_s(horde=True)
# /health answers that count as "alive" for the hang watchdog (503 loading/stopping included)
_ANSWERED = frozenset({Health.READY, Health.LOADING, Health.FAILED})


@dataclass(frozen=True)
class StopReport:
    """What ``stop`` did: the pid it stopped (None when nothing ran) and whether a restart was cancelled."""

    snapshot: InstanceSnapshot
    stopped_pid: int | None
    cancelled_restart: bool


class Supervisor(SupervisorRestarts):
    """Owns the instance processes this controller started or adopted."""

    def __init__(
        self,
        paths: AppPaths,
        store: InstanceStore,
        *,
        gpu_planner: GpuPlanner | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        stall_timeout_s: float = 180.0,
        stop_grace_s: float = supervisor_grace_s(horde=False),
        health_interval_s: float = 10.0,
        hang_timeout_s: float = 90.0,
        health_timeout_s: float = 2.0,
        log_max_bytes: int = logfiles.DEFAULT_MAX_BYTES,
        command_builder: CommandBuilder = serve_command,
        environ: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            paths,
            store,
            gpu_planner=gpu_planner,
            clock=clock,
            wall=wall,
            backoff=backoff,
            log_max_bytes=log_max_bytes,
            command_builder=command_builder,
            environ=environ,
        )
        self.stall_timeout_s, self.stop_grace_s = stall_timeout_s, stop_grace_s
        # the hang watchdog: a ready instance is probed every health_interval_s (each look
        # waits at most health_timeout_s) and killed when silent for hang_timeout_s
        self.health_interval_s, self.hang_timeout_s = health_interval_s, hang_timeout_s
        self.health_timeout_s = health_timeout_s

    # -- start ---------------------------------------------------------------------------

    def start(
        self,
        name: str,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        progress: Callable[[InstanceSnapshot], None] | None = None,
    ) -> InstanceSnapshot:
        """Start ``name`` (or adopt it if it already runs); with ``wait``, block until ready or failed."""
        self._start(name, restarts=0)
        if wait:
            return self.wait_ready(name, timeout_s=timeout_s, progress=progress)
        return self.snapshot(name)

    def supervise(self, name: str) -> InstanceSnapshot:
        """Start ``name`` for ``up``: a start that fails is retried with backoff when its policy says so."""
        try:
            self._start(name, restarts=0)
        except StartError as exc:
            spec = self.spec(name)
            record = ManagedInstance.for_spec(
                spec,
                state=InstanceState.FAILED,
                log_path=logfiles.log_path_for(self.paths.log_dir, name),
                started_at=self._wall(),
                progress_at=self._clock(),
            )
            with self._lock:
                self._records[name] = record
            self._fail(record, str(exc), [])
        return self.snapshot(name)

    def wait_ready(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        progress: Callable[[InstanceSnapshot], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> InstanceSnapshot:
        """Block until ``name`` is ready; raise ``StartError`` with the reason if it fails or times out."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        last_state = None
        while True:
            self.poll([name])
            snap = self.snapshot(name)
            if progress is not None and snap.state != last_state:
                progress(snap)
            last_state = snap.state
            if snap.state is InstanceState.READY:
                return snap
            if snap.state not in RUNNING:
                raise StartError(
                    f"{name!r} did not become ready: {snap.last_error or snap.state.value}"
                )
            if deadline is not None and self._clock() >= deadline:
                self.stop(name)
                raise StartError(f"{name!r} was not ready after {timeout_s:.0f} s; it was stopped")
            sleep(0.1)

    def dismiss(self, name: str) -> InstanceSnapshot:
        """Forget a failure the person has read: FAILED becomes STOPPED (and a pending restart is dropped).

        A failed instance keeps its reason in ``ps`` and the panel's row until dismissed, so a
        failure is never only a toast; anything else is left as it is.
        """
        with self._name_lock(name), self._exclusive(name):
            saved = self.runstate.read(name)
            with self._lock:
                record = self._records.get(name)
                if record is not None and record.state is InstanceState.FAILED:
                    record.state, record.restart_at, record.last_error = InstanceState.STOPPED, None, None
            if saved.state == InstanceState.FAILED.value:
                self._save_runstate(name, InstanceState.STOPPED, saved.restarts, None, None)
        return self.snapshot(name)

    # -- stop ----------------------------------------------------------------------------

    def stop(self, name: str, *, grace_s: float | None = None) -> InstanceSnapshot:
        """Stop ``name`` (SIGTERM, wait, SIGKILL the group); also cancels a pending restart."""
        return self.stop_report(name, grace_s=grace_s).snapshot

    def stop_report(self, name: str, *, grace_s: float | None = None) -> StopReport:
        """``stop``, saying what it did: the pid stopped, or a crash-restart it cancelled.

        It always leaves a "stopped by user" mark (with the time) in the run-state file,
        even when nothing runs, so a controller elsewhere (``up``, the panel) that is
        waiting to restart ``name`` after a crash drops that restart.
        """
        spec = self.spec(name)
        if spec.is_remote:
            raise StartError(
                f"{name!r} is a remote instance ({spec.url}): koboldtui only watches it; "
                "stop it on its own machine"
            )
        with self._name_lock(name):
            return self._stop_locked(name, grace_s)

    def _stop_locked(self, name: str, grace_s: float | None) -> StopReport:
        spec = self.spec(name)
        if grace_s is None:  # a Horde worker finishes its jobs first (stop_budget)
            grace_s = (
                max(self.stop_grace_s, HORDE_STOP_GRACE_S)
                if spec.horde.enabled
                else self.stop_grace_s
            )
        stopped_at = self._wall()
        # the bookkeeping under the file lock: a restart elsewhere either happened before
        # (its launch row is found and stopped) or happens after (it sees the mark and stays down)
        with self._exclusive(name):
            saved = self.runstate.read(name)
            with self._lock:
                record = self._records.get(name)
                pending_here = (
                    record is not None
                    and record.state is InstanceState.FAILED
                    and record.restart_at is not None
                )
            pending_elsewhere = (
                saved.state == InstanceState.FAILED.value
                and saved.restart_pending
                and pid_alive(saved.supervisor_pid)
            )
            if record is None or record.state not in RUNNING:
                launch = self.store.launch(name)
                if launch is not None and self._adopt(launch):
                    with self._lock:
                        record = self._records[name]
            if record is None or record.state not in RUNNING:
                with self._lock:
                    if record is not None:
                        record.state, record.restart_at = InstanceState.STOPPED, None
                self._save_runstate(
                    name,
                    InstanceState.STOPPED,
                    saved.restarts,
                    None,
                    None,
                    stopped_by_user_at=stopped_at,
                )
                return StopReport(self.snapshot(name), None, pending_here or pending_elsewhere)
            with self._lock:
                record.state, record.stop_requested, record.restart_at = (
                    InstanceState.STOPPING,
                    True,
                    None,
                )
            # first, so a watching `up` does not restart it
            self.store.clear_launch(name, record.token)
            self._save_runstate(
                name,
                InstanceState.STOPPED,
                record.restarts,
                None,
                None,
                stopped_by_user_at=stopped_at,
            )
        pid = record.pid
        terminate_group(
            record.pid,
            popen=record.popen,
            grace_s=grace_s,
            token=record.token or None,  # adopted: signal only while the token still matches
        )
        with self._lock:
            record.state, record.pid, record.exit_code = InstanceState.STOPPED, None, None
        self._save_runstate(
            name, InstanceState.STOPPED, record.restarts, None, None, stopped_by_user_at=stopped_at
        )
        return StopReport(self.snapshot(name), pid, False)

    def stop_all(self, *, grace_s: float | None = None) -> list[InstanceSnapshot]:
        """Stop every instance this controller runs or adopted, in parallel (quitting the panel, ``up`` exit)."""
        names = self.managed()
        if not names:
            return []
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return list(pool.map(lambda n: self.stop(n, grace_s=grace_s), names))

    # -- the state machine ---------------------------------------------------------------

    def poll(self, names: Sequence[str] | None = None) -> list[InstanceSnapshot]:
        """Advance each instance one step: exits, health, stalls, due restarts. Returns snapshots."""
        with self._lock:
            records = [r for n, r in self._records.items() if names is None or n in names]
        for record in records:
            self._step(record)
        if names is None:
            self._adopt_foreign()
            return self.snapshots()
        return [self.snapshot(n) for n in names]

    def _step(self, record: ManagedInstance) -> None:
        if record.state in (InstanceState.STARTING, InstanceState.LOADING, InstanceState.READY):
            code = record.exit_code_now()
            if code is not False:
                self._on_exit(record, code)
                return
            if record.state is InstanceState.READY:
                self._watch_ready(record)
                return
            health, load_error = self._probe(record, 0.5)
            now = self._clock()
            if health is Health.FAILED:
                terminate_group(
                    record.pid, popen=record.popen, grace_s=5.0, token=record.token or None
                )
                self._on_exit(
                    record, None, reason=f"the model failed to load: {load_error or 'see the log'}"
                )
                return
            with self._lock:
                if record.state not in (InstanceState.STARTING, InstanceState.LOADING):
                    return
                new = {
                    Health.READY: InstanceState.READY,
                    Health.LOADING: InstanceState.LOADING,
                }.get(health, record.state)
                grew = record.note_log_size()
                # answering /health ("loading") is progress: a big model may load for minutes
                if new is not record.state or grew or health is Health.LOADING:
                    record.progress_at = now
                record.state = new
                stalled = now - record.progress_at > self.stall_timeout_s
            if new is InstanceState.READY:
                record.streak_ready_at = record.health_checked_at = record.answered_at = now
                self._save_runstate(record.name, new, record.restarts, None, record.token)
            elif stalled:
                terminate_group(
                    record.pid, popen=record.popen, grace_s=5.0, token=record.token or None
                )
                self._on_exit(
                    record,
                    None,
                    reason=(
                        f"no progress for {self.stall_timeout_s:.0f} s while {record.state.value} "
                        "(no /health answer, no log output); it was killed"
                    ),
                )
        elif (
            record.state is InstanceState.FAILED
            and (restart_at := record.restart_at) is not None  # read once: a stop may clear it
            # a stop from another shell (`koboldtui stop`) cancels the restart as soon as it is seen
            and (self._clock() >= restart_at or self._stopped_since_failure(record.name))
        ):
            self._restart_due(record)  # re-checks under the locks

    def _probe(self, record: ManagedInstance, timeout_s: float) -> tuple[Health, str | None]:
        """One readiness look: our ``/health``, or a command instance's health path."""
        url = launch_url(record.host, record.port)
        if record.health_path is None:
            return probe_health_detail(url, api_key=record.api_key, timeout_s=timeout_s)
        look = probe_command_health(
            url, record.health_path, api_key=record.api_key, timeout_s=timeout_s
        )
        if look.path and not record.health_path:
            with self._lock:
                record.health_path = look.path  # found by trying the known paths: keep it
        return look.health, None

    def _watch_ready(self, record: ManagedInstance) -> None:
        """The hang watchdog: kill a ready instance whose /health has been silent too long.

        Cheap between looks (a clock reading); a look is one short GET. Answering at all
        (200 ok, 503 loading or stopping) counts; no answer or an odd one does not.
        """
        now = self._clock()
        with self._lock:  # claim this look, so threads polling together probe once
            last_look = record.health_checked_at
            if last_look is None:
                last_look = record.progress_at
            if (
                record.state is not InstanceState.READY
                or record.stop_requested
                or now - last_look < self.health_interval_s
            ):
                return
            record.health_checked_at = now
        health, _ = self._probe(record, self.health_timeout_s)
        with self._lock:
            if health in _ANSWERED:
                record.answered_at = now
                return
            answered_at = record.answered_at
            if answered_at is None:
                answered_at = record.progress_at
            if (
                now - answered_at < self.hang_timeout_s
                or record.state is not InstanceState.READY
                or record.stop_requested
            ):
                return
            pid, popen = record.pid, record.popen
        if pid is None:
            return
        terminate_group(pid, popen=popen, grace_s=5.0, token=record.token or None)
        self._on_exit(
            record,
            None,
            reason=(
                f"stopped answering {record.health_path or '/health'} for "
                f"{self.hang_timeout_s:.0f} s; it was killed"
            ),
        )

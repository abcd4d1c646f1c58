"""The control plane: start, watch, stop and restart instance processes, and adopt ones already running.

A plain library (no Textual): ``koboldtui start/stop/ps/up`` call it from the main thread,
the panel from worker threads. Methods that wait (``start(wait=True)``, ``stop``) block
the calling thread only; ``poll()`` advances every state machine one step and never
waits long, so a loop or a timer drives health, stall detection and restart backoff.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from koboldtui.control import logs as logfiles
from koboldtui.control.adoption import SupervisorRecords
from koboldtui.control.backoff import Backoff
from koboldtui.control.gpu_plan import GpuPlanner, default_gpu_planner
from koboldtui.control.launcher import CommandBuilder, prepare_launch
from koboldtui.control.probe import Health, probe_health_detail
from koboldtui.control.process import pid_alive, serve_command, spawn, terminate_group
from koboldtui.control.reattach import launch_url
from koboldtui.control.runstate import LaunchLockTimeout
from koboldtui.control.state import (
    RUNNING,
    InstanceSnapshot,
    InstanceState,
    ManagedInstance,
    StartError,
    describe_exit,
    with_log_tail,
)
from koboldtui.paths import AppPaths
from koboldtui.store.instances import (
    InstanceStore,
    Launch,
    LaunchConflictError,
    UnknownInstanceError,
)

__all__ = [
    "InstanceSnapshot",
    "InstanceState",
    "LaunchBusyError",
    "StartError",
    "StopReport",
    "Supervisor",
]

HORDE_STOP_GRACE_S = 35.0
ORPHAN_KILL_GRACE_S = 3.0  # a child we spawned but could not record is stopped at once


class LaunchBusyError(StartError):
    """Another controller kept the instance's launch lock too long (it is starting or stopping it)."""


@dataclass(frozen=True)
class StopReport:
    """What ``stop`` did: the pid it stopped (None when nothing ran) and whether a restart was cancelled."""

    snapshot: InstanceSnapshot
    stopped_pid: int | None
    cancelled_restart: bool


class Supervisor(SupervisorRecords):
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
        stop_grace_s: float = 15.0,
        log_max_bytes: int = logfiles.DEFAULT_MAX_BYTES,
        command_builder: CommandBuilder = serve_command,
        environ: dict[str, str] | None = None,
    ) -> None:
        super().__init__(paths, store, clock=clock, wall=wall)
        self._gpu_planner = gpu_planner or default_gpu_planner(store)
        self._backoff = backoff or Backoff()
        self.stall_timeout_s, self.stop_grace_s = stall_timeout_s, stop_grace_s
        self._log_max_bytes = log_max_bytes
        self._command_builder = command_builder
        self._environ = dict(os.environ if environ is None else environ)
        self._flock_depth: dict[str, int] = {}  # guarded by the instance's name lock
        self._failed_at: dict[str, float] = {}  # wall time of each instance's last failure

    @contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """The per-instance thread lock, then ``<data_dir>/run/<name>.lock`` (other processes).

        Re-entrant within one thread; the order (thread lock, then file lock) is always the same.
        """
        with self._name_lock(name):
            depth = self._flock_depth.get(name, 0)
            if depth:
                self._flock_depth[name] = depth + 1
                try:
                    yield
                finally:
                    self._flock_depth[name] -= 1
                return
            try:
                lock = self.runstate.launch_lock(name)
                lock.__enter__()
            except LaunchLockTimeout as exc:
                raise LaunchBusyError(
                    f"{name!r} is being started or stopped by another controller ({exc}); "
                    "try again in a moment"
                ) from exc
            self._flock_depth[name] = 1
            try:
                yield
            finally:
                self._flock_depth[name] = 0
                lock.__exit__(None, None, None)

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

    def _start(self, name: str, *, restarts: int) -> None:
        # two clicks on "start" (threads) or two controllers (processes) never spawn two children
        with self._exclusive(name):
            self._start_locked(name, restarts=restarts)

    def _start_locked(self, name: str, *, restarts: int) -> None:
        spec = self.spec(name)
        with self._lock:
            record = self._records.get(name)
            if record is not None and record.state in RUNNING:
                return
        # re-read under the file lock: another controller may have started it a moment ago
        existing = self.store.launch(name)
        if existing is not None and self._adopt(existing):
            return
        secret = self.secrets.get(name)
        prepared = prepare_launch(
            spec,
            paths=self.paths,
            secret=secret,
            planner=self._gpu_planner,
            command_builder=self._command_builder,
            environ=self._environ,
            port_owner_hint=self._port_owner_hint(spec.port, name),
        )
        logfiles.rotate_if_large(prepared.log_path, max_bytes=self._log_max_bytes)
        try:
            child = spawn(
                prepared.command,
                env=prepared.env,
                log_path=prepared.log_path,
                cwd=self.paths.data_dir,
                header=prepared.header,
            )
        except OSError as exc:
            raise StartError(
                f"cannot start {name!r}: launching {prepared.command[0]} failed: {exc}"
            ) from exc
        token, log_path = prepared.token, prepared.log_path
        started_at = self._wall()
        try:
            self.store.claim_launch(
                Launch(name, child.pid, spec.port, token, started_at, str(log_path))
            )
        except BaseException as exc:
            # an unrecorded child would run untracked (holding the port and VRAM): stop it now
            terminate_group(child.pid, popen=child.popen, grace_s=ORPHAN_KILL_GRACE_S)
            if isinstance(exc, LaunchConflictError) and self._adopt(exc.existing):
                return  # a controller that ignores the lock started it: watch that one
            if isinstance(exc, sqlite3.Error) and self.store.find(name) is None:
                self.store.get(name)  # its spec was removed meanwhile: UnknownInstanceError
            if isinstance(exc, Exception):
                raise StartError(
                    f"cannot start {name!r}: recording the launch failed: {exc}"
                ) from exc
            raise
        with self._lock:
            self._records[name] = ManagedInstance.for_spec(
                spec,
                state=InstanceState.STARTING,
                pid=child.pid,
                token=token,
                started_at=started_at,
                popen=child.popen,
                log_path=log_path,
                restarts=restarts,
                progress_at=self._clock(),
                api_key=secret.get("api_key"),
            )
        self._save_runstate(name, InstanceState.STARTING, restarts, None, token)

    def _port_owner_hint(self, port: int, name: str) -> str | None:
        for launch in self.store.launches():
            if launch.port == port and launch.name != name and pid_alive(launch.pid):
                return f"instance {launch.name!r} (pid {launch.pid})"
        return None

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
        with self._name_lock(name):
            return self._stop_locked(name, grace_s)

    def _stop_locked(self, name: str, grace_s: float | None) -> StopReport:
        spec = self.spec(name)
        if grace_s is None:  # a Horde worker finishes its job first (the runtime allows it 30 s)
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
                return
            health, load_error = probe_health_detail(
                launch_url(record.host, record.port), api_key=record.api_key, timeout_s=0.5
            )
            now = self._clock()
            if health is Health.FAILED:
                terminate_group(record.pid, popen=record.popen, grace_s=5.0)
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
                record.streak_ready_at = now
                self._save_runstate(record.name, new, record.restarts, None, record.token)
            elif stalled:
                terminate_group(record.pid, popen=record.popen, grace_s=5.0)
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

    def _stopped_since_failure(self, name: str) -> bool:
        """True when someone stopped ``name`` (any controller) after its last failure here."""
        with self._lock:
            failed_at = self._failed_at.get(name)
        marked = self.runstate.read(name).stopped_by_user_at
        return failed_at is not None and marked is not None and marked >= failed_at

    def _restart_due(self, record: ManagedInstance) -> None:
        """Restart a failed instance whose backoff ended, unless it was stopped meanwhile."""
        name = record.name
        try:
            with self._exclusive(name):
                with self._lock:  # re-check under the locks: a stop may have come in between
                    if (
                        self._records.get(name) is not record
                        or record.state is not InstanceState.FAILED
                        or record.restart_at is None
                    ):
                        return
                if self._stopped_since_failure(name):
                    with self._lock:
                        record.state, record.restart_at = InstanceState.STOPPED, None
                    saved = self.runstate.read(name)
                    self._save_runstate(
                        name,
                        InstanceState.STOPPED,
                        record.restarts,
                        None,
                        None,
                        stopped_by_user_at=saved.stopped_by_user_at,
                    )
                    return
                if self._clock() < record.restart_at:
                    return
                record.restart_at = None
                try:
                    self._start_locked(name, restarts=record.restarts + 1)
                    with self._lock:
                        self._records[name].streak = record.streak
                except UnknownInstanceError:
                    with self._lock:
                        self._records.pop(name, None)  # its spec was removed meanwhile
                except Exception as exc:  # noqa: BLE001 - any launch failure is retried per the policy
                    record.restarts += 1
                    self._fail(record, f"restart failed: {exc}", [])
        except LaunchBusyError:
            return  # another controller is starting or stopping it: look again at the next poll

    def _on_exit(
        self, record: ManagedInstance, code: int | None | bool, *, reason: str | None = None
    ) -> None:
        launch = self.store.launch(record.name)
        if record.stop_requested or launch is None or launch.token != record.token:
            with self._lock:
                record.state, record.pid = InstanceState.STOPPED, None
            return  # stopped on purpose (maybe by another controller)
        self.store.clear_launch(record.name, record.token)
        if reason is None:
            if code == 0:
                with self._lock:
                    record.state, record.pid = InstanceState.STOPPED, None
                self._save_runstate(record.name, InstanceState.STOPPED, record.restarts, None, None)
                return
            reason = describe_exit(code if isinstance(code, int) else None)
        self._fail(record, reason, logfiles.tail_of_last_launch(record.log_path, 15))

    def _fail(self, record: ManagedInstance, reason: str, tail: list[str]) -> None:
        now = self._clock()
        with self._lock:
            uptime = None if record.streak_ready_at is None else now - record.streak_ready_at
            record.state, record.pid, record.popen = InstanceState.FAILED, None, None
            record.streak_ready_at = None
            message = reason
            if record.policy == "on-failure":
                record.streak = self._backoff.streak_after_exit(record.streak, uptime)
                delay = self._backoff.delay(record.streak)
                record.restart_at = now + delay
                message = f"{reason}; restarting in {delay:.0f} s"
            record.last_error = with_log_tail(message, tail)
            self._failed_at[record.name] = self._wall()
            pending = record.restart_at is not None
        self._save_runstate(
            record.name,
            InstanceState.FAILED,
            record.restarts,
            record.last_error,
            None,
            restart_pending=pending,
        )

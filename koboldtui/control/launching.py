"""The launch path (per-instance locks, spawn, claim/record, adopt-on-conflict), kept apart from the supervisor's state machine."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from koboldtui.control import logs as logfiles
from koboldtui.control.adoption import SupervisorRecords
from koboldtui.control.gpu_plan import GpuPlanner, default_gpu_planner
from koboldtui.control.launcher import CommandBuilder, prepare_launch
from koboldtui.control.process import pid_alive, serve_command, spawn, terminate_group
from koboldtui.control.runstate import LaunchLockTimeout
from koboldtui.control.state import (
    RUNNING,
    InstanceState,
    ManagedInstance,
    StartError,
)
from koboldtui.paths import AppPaths
from koboldtui.store.instances import (
    InstanceStore,
    Launch,
    LaunchConflictError,
)

ORPHAN_KILL_GRACE_S = 3.0  # a child we spawned but could not record is stopped at once


class LaunchBusyError(StartError):
    """Another controller kept the instance's launch lock too long (it is starting or stopping it)."""


class SupervisorLaunches(SupervisorRecords):
    """Launches instance processes: one start at a time per instance, across threads and processes."""

    def __init__(
        self,
        paths: AppPaths,
        store: InstanceStore,
        *,
        gpu_planner: GpuPlanner | None = None,
        log_max_bytes: int = logfiles.DEFAULT_MAX_BYTES,
        command_builder: CommandBuilder = serve_command,
        environ: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """The launch settings are ours; ``clock``/``wall`` go to the records."""
        super().__init__(paths, store, **kwargs)
        self._gpu_planner = gpu_planner or default_gpu_planner(store)
        self._log_max_bytes = log_max_bytes
        self._command_builder = command_builder
        self._environ = dict(os.environ if environ is None else environ)
        self._flock_depth: dict[str, int] = {}  # guarded by the instance's name lock

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
                cwd=prepared.cwd or self.paths.data_dir,
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

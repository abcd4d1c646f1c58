"""Adopting launches that still run, and reading what the supervisor knows of each instance."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from koboldtui.control import logs as logfiles
from koboldtui.control.probe import Health
from koboldtui.control.process import pid_alive
from koboldtui.control.reattach import check_launch
from koboldtui.control.remote import FlavourWatch, remote_snapshot
from koboldtui.control.runstate import RunState, RunStateFiles
from koboldtui.control.secrets import InstanceSecrets
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import (
    RUNNING,
    InstanceSnapshot,
    InstanceState,
    ManagedInstance,
    with_log_tail,
)
from koboldtui.paths import AppPaths
from koboldtui.store.instances import InstanceStore, Launch


class SupervisorRecords:
    """What a supervisor knows of each instance (records, snapshots, run-state); adopts launches."""

    def __init__(
        self,
        paths: AppPaths,
        store: InstanceStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths.ensure()
        self.store = store
        self.secrets = InstanceSecrets(paths.secrets_file)
        self.runstate = RunStateFiles(paths.data_dir / "run")
        self._clock, self._wall = clock, wall
        self._records: dict[str, ManagedInstance] = {}
        self._lock = (
            threading.RLock()
        )  # guards _records and record fields; never held while waiting
        self._name_locks: dict[str, threading.RLock] = {}  # one start/stop at a time per instance
        self.flavours = FlavourWatch()  # remote instances' state, any instance's flavour facts

    def _name_lock(self, name: str) -> threading.RLock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.RLock())

    # -- reading -------------------------------------------------------------------------

    def spec(self, name: str) -> InstanceSpec:
        """The saved spec of ``name`` (``UnknownInstanceError`` names the known ones)."""
        return InstanceSpec.from_dict(self.store.get(name).spec)

    def snapshot(self, name: str) -> InstanceSnapshot:
        """How ``name`` is doing now, as this controller knows it."""
        spec = self.spec(name)
        if spec.is_remote:  # not ours to run: its state is what its last look found
            api_key = self.secrets.get(name).get("api_key")
            return remote_snapshot(spec, self.flavours.look(name, spec.base_url(), api_key))
        with self._lock:
            record = self._records.get(name)
            if record is not None and (
                record.state in RUNNING or record.state is InstanceState.FAILED
            ):
                return record.snapshot(self._wall(), self._clock())
        log_path = logfiles.log_path_for(self.paths.log_dir, name)
        return InstanceSnapshot.at_rest(spec, self.runstate.read(name), str(log_path))

    def snapshots(self) -> list[InstanceSnapshot]:
        """Every saved instance, sorted by name."""
        return [self.snapshot(name) for name in self.store.names()]

    def managed(self) -> list[str]:
        """Names this controller is running or will restart."""
        with self._lock:
            return sorted(
                n
                for n, r in self._records.items()
                if r.state in RUNNING or r.restart_at is not None
            )

    def is_running(self, name: str) -> bool:
        """True while this controller has ``name`` starting, loading, ready or stopping."""
        with self._lock:
            record = self._records.get(name)
            return record is not None and record.state in RUNNING

    # -- reattach ------------------------------------------------------------------------

    def reattach(self) -> list[str]:
        """Adopt every recorded launch that is verifiably still ours; clean the stale rows."""
        adopted = []
        for launch in self.store.launches():
            if self._adopt(launch):
                adopted.append(launch.name)
        return adopted

    def _adopt(self, launch: Launch) -> bool:
        with self._lock:
            current = self._records.get(launch.name)
            if current is not None and current.token == launch.token and current.state in RUNNING:
                return True
        spec = self.spec(launch.name)
        check = check_launch(
            launch,
            spec.host,
            api_key=self.secrets.get(spec.name).get("api_key"),
            health_path=None if spec.kind == "serve" else spec.health,
        )
        if not check.ours:
            if self.store.clear_launch(launch.name, launch.token):
                tail = logfiles.tail_of_last_launch(launch.log_path, 10)
                message = f"stopped unexpectedly while no controller watched it ({check.reason})"
                previous = self.runstate.read(launch.name)
                self._save_runstate(
                    launch.name,
                    InstanceState.FAILED,
                    previous.restarts,
                    with_log_tail(message, tail),
                    launch.token,
                )
            return False
        state = {Health.READY: InstanceState.READY, Health.LOADING: InstanceState.LOADING}.get(
            check.health, InstanceState.STARTING
        )
        saved = self.runstate.read(launch.name)
        with self._lock:
            self._records[launch.name] = ManagedInstance.for_spec(
                spec,
                state=state,
                pid=launch.pid,
                port=launch.port,
                token=launch.token,
                started_at=launch.started_at,
                log_path=Path(launch.log_path),
                restarts=saved.restarts if saved.token == launch.token else 0,
                progress_at=self._clock(),
                api_key=self.secrets.get(spec.name).get("api_key"),
            )
        return True

    def _adopt_foreign(self) -> None:
        """Pick up instances another controller started (e.g. ``koboldtui start`` in another shell)."""
        for launch in self.store.launches():
            with self._lock:
                record = self._records.get(launch.name)
                known = record is not None and record.token == launch.token
            if not known and pid_alive(launch.pid):
                self._adopt(launch)

    def _save_runstate(
        self,
        name: str,
        state: InstanceState,
        restarts: int,
        error: str | None,
        token: str | None,
        *,
        restart_pending: bool = False,
        stopped_by_user_at: float | None = None,
    ) -> None:
        self.runstate.write(
            name,
            RunState(
                state=state.value,
                restarts=restarts,
                last_error=error,
                token=token,
                supervisor_pid=os.getpid(),
                updated_at=self._wall(),
                restart_pending=restart_pending,
                stopped_by_user_at=stopped_by_user_at,
            ),
        )

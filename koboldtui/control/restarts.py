"""Crash handling: failure bookkeeping, restart backoff and stop markers, kept apart from the launch path and the state machine."""

from __future__ import annotations

from typing import Any

from koboldtui.control import logs as logfiles
from koboldtui.control.backoff import Backoff
from koboldtui.control.launching import LaunchBusyError, SupervisorLaunches
from koboldtui.control.state import (
    InstanceState,
    ManagedInstance,
    describe_exit,
    with_log_tail,
)
from koboldtui.store.instances import UnknownInstanceError


class SupervisorRestarts(SupervisorLaunches):
    """Decides what an exit means: stopped on purpose, failed, or failed and due a restart after backoff."""

    def __init__(self, *args: Any, backoff: Backoff | None = None, **kwargs: Any) -> None:
        """``backoff`` is ours; everything else is the launch path's (see Supervisor)."""
        super().__init__(*args, **kwargs)
        self._backoff = backoff or Backoff()
        self._failed_at: dict[str, float] = {}  # wall time of each instance's last failure

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

"""The transitions of an instance's run, each one atomic step on the shared run record.

Every controller (panel, ``up``, a CLI shell, the gateway) changes a run only through
these steps; each reads the row and writes the next one inside one ``BEGIN IMMEDIATE``
transaction (``koboldtui.store.runs``), so the rules below hold between processes:

- one launch at a time: ``claim`` reserves the run (state starting, a new token, no pid)
  before anything is spawned; a second controller finds the reservation and waits for it
  (or adopts the process it made) instead of spawning a second child;
- a stop always wins: ``begin_stop`` marks the run stopping (or stopped) and drops any
  pending restart; an exit recorded after that (``ended``) finds the mark and records
  "stopped", never "failed"; a launch whose reservation a stop took away (``launched``)
  is refused, and its child is killed by the controller that made it;
- a restart happens only while the failure it answers is still the last word
  (``claim(restart=True)`` needs the run failed with a restart owned by this controller).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from koboldtui.control.process import pid_alive
from koboldtui.store.runs import RunRecord, RunStore

CLAIMED, RUNNING, LAUNCHING, CANCELLED = "claimed", "running", "launching", "cancelled"
STOPPING = "stopping"
# a stop still under way after this long is taken for one whose controller died mid-way
STOP_STALE_S = 120.0
# a reservation whose controller is alive but has not recorded a pid for this long is abandoned
CLAIM_STALE_S = 60.0
# the run-state files of earlier versions (<data>/run/<name>.json) carried these keys; the
# Horde job journals beside them (<name>.horde-jobs.json) are not ours to touch
RUNSTATE_KEYS = frozenset({"state", "restarts", "supervisor_pid"})
JOURNAL_SUFFIX = ".horde-jobs.json"


def new_owner() -> str:
    """This controller's name in the run record: its pid (to tell whether it still lives) and a nonce."""
    return f"{os.getpid()}:{secrets.token_hex(4)}"


def owner_alive(owner: str | None) -> bool:
    """True while the process of controller ``owner`` runs."""
    if not owner:
        return False
    try:
        return pid_alive(int(owner.split(":", 1)[0]))
    except ValueError:
        return False


class RunBook:
    """The run records, changed by named, atomic transitions; ``owner`` names this controller."""

    def __init__(
        self, runs: RunStore, *, wall: Callable[[], float] = time.time, owner: str | None = None
    ) -> None:
        self.runs = runs
        self._wall = wall
        self.owner = owner or new_owner()

    def get(self, name: str) -> RunRecord:
        return self.runs.get(name)

    def all(self) -> dict[str, RunRecord]:
        return self.runs.all()

    def _change(
        self, name: str, decide: Callable[[RunRecord], RunRecord | None]
    ) -> tuple[RunRecord, RunRecord]:
        try:
            return self.runs.change(name, decide)
        except sqlite3.IntegrityError:  # the instance was removed meanwhile: nothing to record
            gone = RunRecord(name)
            return gone, gone

    # -- launching ---------------------------------------------------------------------------

    def claim(
        self,
        name: str,
        *,
        token: str,
        port: int,
        log_path: str,
        started_by: str | None,
        restart: bool = False,
    ) -> tuple[str, RunRecord]:
        """Reserve the run for a launch with ``token``: (CLAIMED, RUNNING, ... or CANCELLED; the row seen).

        RUNNING: a process is recorded and alive (adopt it); LAUNCHING: another controller
        is preparing one, STOPPING: another is stopping it (wait, then claim again);
        CANCELLED: a restart that a stop or a new start overtook.
        A fresh start resets the restart count and the last error; a restart counts one more.
        """
        outcome = [CLAIMED]
        now = self._wall()

        def decide(old: RunRecord) -> RunRecord | None:
            if old.live:
                if old.pid is not None and pid_alive(old.pid):
                    stopping = old.state == "stopping" and now - (old.stop_at or 0.0) < STOP_STALE_S
                    outcome[0] = STOPPING if stopping else RUNNING
                    return None
                if (
                    old.pid is None
                    and owner_alive(old.owner)
                    and now - (old.started_at or 0.0) < CLAIM_STALE_S
                ):
                    outcome[0] = LAUNCHING
                    return None
                # a process that died with nobody to record it, or an abandoned reservation
            if restart and not (
                old.state == "failed"
                and old.restart_at is not None
                and old.restart_owner == self.owner
            ):
                outcome[0] = CANCELLED
                return None
            return replace(
                old,
                state="starting",
                pid=None,
                port=port,
                token=token,
                started_at=now,
                log_path=log_path,
                restarts=old.restarts + 1 if restart else 0,
                last_error=None,
                started_by=old.started_by if started_by is None else started_by,
                owner=self.owner,
                restart_at=None,
                restart_owner=None,
                looked_at=None,
            )

        old, new = self._change(name, decide)
        return outcome[0], (new if outcome[0] == CLAIMED else old)

    def launched(self, name: str, token: str, pid: int) -> bool:
        """Record the pid of the child made for reservation ``token``; False when a stop took the reservation."""

        def decide(old: RunRecord) -> RunRecord | None:
            if old.token != token or old.state != "starting" or old.pid is not None:
                return None
            return replace(old, pid=pid)

        _, new = self._change(name, decide)
        return new.token == token and new.pid == pid

    def failed_to_launch(
        self, name: str, token: str, error: str, *, restart_in_s: float | None = None
    ) -> RunRecord:
        """A launch refused before any process ran (missing program, taken port, bad model): failed, like an exit."""

        def decide(old: RunRecord) -> RunRecord | None:
            if old.token != token:
                return None  # a stop (or another start) overtook it
            return self._failed(old, error, restart_in_s, self.owner)

        return self._change(name, decide)[1]

    def _failed(self, old: RunRecord, error: str, restart_in_s: float | None, owner: str) -> RunRecord:
        """``old`` as failed with ``error``; a restart due in ``restart_in_s`` (owned by ``owner``) if given."""
        return replace(
            old,
            state="failed",
            pid=None,
            token=None,
            last_error=error,
            restart_at=None if restart_in_s is None else self._wall() + restart_in_s,
            restart_owner=None if restart_in_s is None else owner,
        )

    # -- running -----------------------------------------------------------------------------

    def became(self, name: str, token: str, state: str) -> bool:
        """Starting → loading → ready, for the launch ``token`` only (a stop or an exit may have ended it)."""

        def decide(old: RunRecord) -> RunRecord | None:
            if old.token != token or old.state not in ("starting", "loading") or old.pid is None:
                return None
            return replace(old, state=state)

        _, new = self._change(name, decide)
        return new.token == token and new.state == state

    def ended(
        self,
        name: str,
        token: str,
        *,
        error: str | None,
        restart_in_s: float | None = None,
        restart_owner: str | None = None,
    ) -> tuple[RunRecord, RunRecord]:
        """The process of launch ``token`` is gone: stopped if a stop was asked for (or it exited 0), else failed.

        The failure keeps ``error`` and, when given, a restart due in ``restart_in_s``
        owned by ``restart_owner`` (this controller by default).
        """

        def decide(old: RunRecord) -> RunRecord | None:
            if not token or old.token != token:
                return None  # recorded already (by us or another controller), or a newer launch
            if old.state == "stopping" or error is None:
                return replace(old, state="stopped", pid=None, token=None, started_by=None)
            return self._failed(old, error, restart_in_s, restart_owner or self.owner)

        return self._change(name, decide)

    # -- stopping ----------------------------------------------------------------------------

    def begin_stop(self, name: str) -> RunRecord:
        """Mark ``name`` stopping (stopped when no process is recorded); drop a pending restart. Returns the old row."""
        now = self._wall()

        def decide(old: RunRecord) -> RunRecord:
            marked = replace(
                old, stop_at=now, restart_at=None, restart_owner=None, started_by=None
            )
            if old.live and old.pid is not None:
                return replace(marked, state="stopping")
            # nothing runs, or another controller is still preparing a launch: that launch
            # loses its reservation (``launched`` refuses it and its maker kills the child)
            return replace(marked, state="stopped", pid=None, token=None, last_error=None)

        return self._change(name, decide)[0]

    def end_stop(self, name: str, token: str | None) -> RunRecord:
        """The stopped process of launch ``token`` is gone."""

        def decide(old: RunRecord) -> RunRecord | None:
            if old.token != token or old.state != "stopping":
                return None
            return replace(old, state="stopped", pid=None, token=None)

        return self._change(name, decide)[1]

    def dismiss(self, name: str) -> RunRecord:
        """The person read the failure: failed → stopped, the error and any pending restart dropped."""

        def decide(old: RunRecord) -> RunRecord | None:
            if old.state != "failed":
                return None
            return replace(old, state="stopped", last_error=None, restart_at=None, restart_owner=None)

        return self._change(name, decide)[1]

    # -- remote instances --------------------------------------------------------------------

    def looked(self, name: str, state: str, error: str | None) -> None:
        """What the last look at a remote instance found (any controller may read it, with its age)."""
        now = self._wall()
        self._change(name, lambda old: replace(old, state=state, last_error=error, looked_at=now))

    # -- upgrade -----------------------------------------------------------------------------

    def adopt_old_files(self, folder: Path) -> int:
        """Fold the run-state files of earlier versions (``<data>/run/<name>.json``) into the records, once.

        Their restart count and last failure are kept; the files (and their ``.lock``
        companions) are removed. The launches they described moved with the database.
        """
        try:
            files = sorted(folder.glob("*.json"))
            for lock in folder.glob("*.lock"):  # the per-instance flock files are gone too
                lock.unlink(missing_ok=True)
        except OSError:
            return 0
        moved = 0
        for path in files:
            if path.name.endswith(JOURNAL_SUFFIX):
                continue  # a Horde worker's job journal: its instance's, not ours
            name = path.stem
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if not isinstance(data, dict) or not RUNSTATE_KEYS <= set(data):
                continue  # not a run-state file of ours: left alone

            def decide(old: RunRecord, data: dict = data) -> RunRecord | None:
                if old.live or old.updated_at:
                    return None  # the record is newer than the file
                failed = data.get("state") == "failed"
                restarts = data.get("restarts")
                return replace(
                    old,
                    state="failed" if failed else "stopped",
                    restarts=restarts if isinstance(restarts, int) else 0,
                    last_error=str(data.get("last_error")) if failed else None,
                    stop_at=data.get("stopped_by_user_at")
                    if isinstance(data.get("stopped_by_user_at"), (int, float))
                    else None,
                )

            self._change(name, decide)
            moved += 1
            for leftover in (path, path.with_suffix(".lock")):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError:
                    pass
        return moved

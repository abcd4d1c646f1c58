"""The one record of what runs: a ``runs`` row per instance, changed only by atomic read-modify-write steps.

Every controller (the panel, ``koboldtui up``, a CLI shell, the gateway) starts, watches and
stops the same instances. What they must agree on (pid, launch token, state, the last stop,
a pending restart, the last error, who started it) lives in this one row, and every change
is one ``BEGIN IMMEDIATE`` transaction: read the row, decide, write it back, commit. SQLite
takes its write lock at BEGIN, so two processes (or two threads) never decide on the same
old row: the second one reads what the first wrote. A stop that lands while an exit is
being recorded is therefore seen by it (and wins), never overwritten by it.

The store knows rows, not the rules: the callers (``koboldtui.control.run_book``) pass the
decision as a function of the old row.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from koboldtui.store.db import transaction

LOCKED_RETRY_S = 5.0  # as long as the busy timeout of koboldtui.store.db
# the states in which a process exists (or is being made) for the instance
LIVE_STATES = ("starting", "loading", "ready", "stopping")


@dataclass(frozen=True)
class RunRecord:
    """One instance's run as every controller sees it (wall-clock times, seconds since the epoch)."""

    name: str
    state: str = "stopped"  # stopped | starting | loading | ready | stopping | failed | unreachable
    pid: int | None = None  # None while a launch is being prepared (state starting) or none runs
    port: int | None = None
    token: str | None = None  # the launch token; set from the claim on, cleared when it ends
    started_at: float | None = None
    log_path: str | None = None
    restarts: int = 0
    last_error: str | None = None  # kept until the person dismisses it or starts again
    started_by: str | None = None  # "user" | "up" | "gateway" (None: nobody, or unknown)
    owner: str | None = None  # the controller that launched it ("pid:hex")
    stop_at: float | None = None  # the last stop asked for (by anyone)
    restart_at: float | None = None  # a restart is pending, due at this time
    restart_owner: str | None = None  # the controller that will do that restart
    updated_at: float = 0.0
    looked_at: float | None = None  # a remote instance: when the state above was looked at

    @property
    def live(self) -> bool:
        """True while a process exists, or is being made, for this run."""
        return self.state in LIVE_STATES


_COLUMNS = tuple(f.name for f in fields(RunRecord))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM runs"


def _record(row: sqlite3.Row | tuple[Any, ...]) -> RunRecord:
    return RunRecord(*tuple(row))


class RunStore:
    """The ``runs`` table: read a row, or change it in one atomic step."""

    def __init__(self, conn: sqlite3.Connection, *, wall: Callable[[], float] = time.time) -> None:
        self.conn = conn
        self._wall = wall
        # reads finish under the connection's lock: a SELECT left open by one thread would
        # hold a stale snapshot that makes another thread's BEGIN IMMEDIATE fail at once
        self._lock = getattr(conn, "lock", None) or threading.RLock()

    def get(self, name: str) -> RunRecord:
        """The row of ``name`` (a fresh "stopped" record when it has none yet)."""
        with self._lock:
            row = self.conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else RunRecord(name)

    def all(self) -> dict[str, RunRecord]:
        """Every row, by name (instances without a row are simply stopped)."""
        with self._lock:
            rows = self.conn.execute(_SELECT).fetchall()
        return {r.name: r for r in map(_record, rows)}

    def change(
        self, name: str, decide: Callable[[RunRecord], RunRecord | None]
    ) -> tuple[RunRecord, RunRecord]:
        """Apply ``decide(old) -> new`` atomically; returns (old, new). ``None`` or an equal row writes nothing.

        ``decide`` runs inside the write transaction: keep it quick (no waiting, no HTTP).
        A row for an instance that does not exist fails on the foreign key
        (``sqlite3.IntegrityError``). SQLite answers "locked" at once, without its busy
        wait, when this connection still reads an older snapshot; that is retried here
        for up to ``LOCKED_RETRY_S``.
        """
        deadline = time.monotonic() + LOCKED_RETRY_S
        while True:
            try:
                return self._change_once(name, decide)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)

    def _change_once(
        self, name: str, decide: Callable[[RunRecord], RunRecord | None]
    ) -> tuple[RunRecord, RunRecord]:
        with transaction(self.conn):
            row = self.conn.execute(_SELECT + " WHERE name = ?", (name,)).fetchone()
            old = _record(row) if row else RunRecord(name)
            new = decide(old)
            if new is None or new == old:
                return old, old
            new = replace(new, name=name, updated_at=self._wall())
            self.conn.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                "ON CONFLICT(name) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "name"),
                tuple(getattr(new, c) for c in _COLUMNS),
            )
        return old, new

"""Instance specs and their live launches in SQLite, so every controller (panel, CLI, ``up``) shares them.

Specs are stored as JSON dicts (the ``control`` package owns their meaning); this module
only guarantees the invariants that need the database: unique names, never two specs
on one port, and the launch (pid, port, token) of each running child for reattach, which
is a part of the instance's run record (``koboldtui.store.runs``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from koboldtui.store.db import transaction

# a remote instance's port is on another box: the one-port-per-instance rule leaves it out
# (``kind`` is a column computed from the spec JSON, migration 2 in ``koboldtui.store.db``)
REMOTE_KIND = "remote"


class InstanceStoreError(ValueError):
    """A change to the stored instances was refused; the message says why and what to do."""


class UnknownInstanceError(InstanceStoreError, KeyError):
    """No instance of that name exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateInstanceError(InstanceStoreError):
    """An instance of that name already exists."""


class PortConflictError(InstanceStoreError):
    """Another saved instance already uses that port."""


class LaunchConflictError(InstanceStoreError):
    """A launch of that instance is already recorded (another controller started it)."""

    def __init__(self, message: str, existing: Launch) -> None:
        super().__init__(message)
        self.existing = existing


@dataclass(frozen=True)
class StoredInstance:
    """One row of ``instances``: the spec JSON as a dict, plus when it was made and changed."""

    name: str
    spec: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Launch:
    """One running child as its controller recorded it: enough to find and verify it later."""

    name: str
    pid: int
    port: int
    token: str
    started_at: float
    log_path: str


def unknown_instance(name: str, known: list[str]) -> UnknownInstanceError:
    """The error for a name that is not saved, listing the ones that are."""
    hint = f"known instances: {', '.join(known)}" if known else "no instances are saved yet"
    return UnknownInstanceError(
        f"there is no instance named {name!r} ({hint}); add one with `koboldtui instance add`"
    )


class InstanceStore:
    """Specs and launches on one shared connection; a lock makes it safe from worker threads."""

    def __init__(self, conn: sqlite3.Connection, *, clock: Callable[[], float] = time.time) -> None:
        self._conn = conn
        self._clock = clock
        # the connection's own lock (koboldtui.store.db.SharedConnection): a read finishes
        # before another thread's transaction on the same connection begins
        self._lock = getattr(conn, "lock", None) or threading.RLock()

    @property
    def conn(self) -> sqlite3.Connection:
        """The shared connection, for other tables of the same file (GPU rows)."""
        return self._conn

    # -- specs -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Saved instance names, sorted."""
        with self._lock:
            rows = self._conn.execute("SELECT name FROM instances ORDER BY name").fetchall()
        return [row[0] for row in rows]

    def find(self, name: str) -> StoredInstance | None:
        """The stored instance or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, spec, created_at, updated_at FROM instances WHERE name = ?", (name,)
            ).fetchone()
        return self._row(row) if row else None

    def get(self, name: str) -> StoredInstance:
        """The stored instance; raises ``UnknownInstanceError`` naming the ones that exist."""
        found = self.find(name)
        if found is None:
            raise unknown_instance(name, self.names())
        return found

    def all(self) -> list[StoredInstance]:
        """Every saved instance, sorted by name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, spec, created_at, updated_at FROM instances ORDER BY name"
            ).fetchall()
        return [self._row(row) for row in rows]

    def add(self, name: str, spec: dict[str, Any]) -> StoredInstance:
        """Save a new instance; refuses a taken name or a port another instance uses."""
        now = self._clock()
        with self._lock, transaction(self._conn):
            if self._conn.execute("SELECT 1 FROM instances WHERE name = ?", (name,)).fetchone():
                raise DuplicateInstanceError(
                    f"an instance named {name!r} already exists: pick another name, or change it "
                    f"with `koboldtui instance edit {name}`"
                )
            self._check_port(name, spec)
            self._conn.execute(
                "INSERT INTO instances (name, spec, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (name, json.dumps(spec, sort_keys=True), now, now),
            )
        return StoredInstance(name, dict(spec), now, now)

    def update(self, name: str, spec: dict[str, Any]) -> StoredInstance:
        """Replace an instance's spec; refuses an unknown name or a port another instance uses."""
        now = self._clock()
        with self._lock, transaction(self._conn):
            row = self._conn.execute(
                "SELECT created_at FROM instances WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise unknown_instance(name, self._names_unlocked())
            self._check_port(name, spec)
            self._conn.execute(
                "UPDATE instances SET spec = ?, updated_at = ? WHERE name = ?",
                (json.dumps(spec, sort_keys=True), now, name),
            )
        return StoredInstance(name, dict(spec), float(row[0]), now)

    def remove(self, name: str) -> None:
        """Delete an instance (its launch row goes with it through the foreign key)."""
        with self._lock, transaction(self._conn):
            cur = self._conn.execute("DELETE FROM instances WHERE name = ?", (name,))
            if cur.rowcount == 0:
                raise unknown_instance(name, self._names_unlocked())

    def port_owner(self, port: int, *, exclude: str | None = None) -> str | None:
        """The saved instance using ``port`` (other than ``exclude``), if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name FROM instances WHERE CAST(json_extract(spec, '$.port') AS INTEGER) = ? "
                "AND name IS NOT ? AND kind != ? LIMIT 1",
                (int(port), exclude, REMOTE_KIND),
            ).fetchone()
        return row[0] if row else None

    # -- launches --------------------------------------------------------------------------

    # A launch is the part of an instance's run record (``koboldtui.store.runs``) that says
    # which process runs it; these read and write that part of the ``runs`` row.

    def record_launch(self, launch: Launch) -> None:
        """Remember a started child, replacing any recorded launch of it (see ``claim_launch``)."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO runs (name, state, pid, port, token, started_at, log_path) "
                "VALUES (?, 'starting', ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "state = CASE WHEN state IN ('starting', 'loading', 'ready') THEN state "
                "ELSE 'starting' END, pid = excluded.pid, "
                "port = excluded.port, token = excluded.token, started_at = excluded.started_at, "
                "log_path = excluded.log_path",
                (
                    launch.name,
                    launch.pid,
                    launch.port,
                    launch.token,
                    launch.started_at,
                    launch.log_path,
                ),
            )

    def claim_launch(self, launch: Launch) -> None:
        """Record a started child only if no launch of that instance is recorded yet.

        Unlike ``record_launch`` it never overwrites: a row that is already there (another
        controller's child) raises ``LaunchConflictError`` carrying it, so the caller can
        stop its own child instead of leaving one of the two untracked. A removed spec
        fails on the foreign key (``sqlite3.IntegrityError``).
        """
        with self._lock, transaction(self._conn):
            row = self._conn.execute(
                "SELECT name, pid, port, token, started_at, log_path FROM runs "
                "WHERE name = ? AND pid IS NOT NULL",
                (launch.name,),
            ).fetchone()
            if row is not None:
                existing = self._launch_row(row)
                raise LaunchConflictError(
                    f"{launch.name!r} was started meanwhile by another controller "
                    f"(pid {existing.pid})",
                    existing,
                )
            self.record_launch(launch)

    def launch(self, name: str) -> Launch | None:
        """The recorded launch of ``name``, if any."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, pid, port, token, started_at, log_path FROM runs "
                "WHERE name = ? AND pid IS NOT NULL",
                (name,),
            ).fetchone()
        return self._launch_row(row) if row else None

    def launches(self) -> list[Launch]:
        """Every recorded launch."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, pid, port, token, started_at, log_path FROM runs "
                "WHERE pid IS NOT NULL ORDER BY name"
            ).fetchall()
        return [self._launch_row(row) for row in rows]

    def clear_launch(self, name: str, token: str | None = None) -> bool:
        """Forget a launch (only if its token still matches, when one is given); True if removed."""
        sql = (
            "UPDATE runs SET pid = NULL, token = NULL, state = CASE WHEN state IN "
            "('starting', 'loading', 'ready', 'stopping') THEN 'stopped' ELSE state END "
            "WHERE name = ? AND pid IS NOT NULL"
        )
        with self._lock:
            if token is None:
                cur = self._conn.execute(sql, (name,))
            else:
                cur = self._conn.execute(sql + " AND token = ?", (name, token))
        return cur.rowcount > 0

    # -- internals -------------------------------------------------------------------------

    def _names_unlocked(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM instances ORDER BY name")]

    def _check_port(self, name: str, spec: dict[str, Any]) -> None:
        port = spec.get("port")
        if port is None or spec.get("kind") == REMOTE_KIND:
            return
        row = self._conn.execute(
            "SELECT name FROM instances WHERE CAST(json_extract(spec, '$.port') AS INTEGER) = ? "
            "AND name != ? AND kind != ? LIMIT 1",
            (int(port), name, REMOTE_KIND),
        ).fetchone()
        if row:
            raise PortConflictError(
                f"port {port} is already used by instance {row[0]!r}: pick another port with "
                "--port (two instances can never share a port)"
            )

    @staticmethod
    def _row(row: sqlite3.Row | tuple[Any, ...]) -> StoredInstance:
        return StoredInstance(
            name=row[0], spec=json.loads(row[1]), created_at=float(row[2]), updated_at=float(row[3])
        )

    @staticmethod
    def _launch_row(row: sqlite3.Row | tuple[Any, ...]) -> Launch:
        return Launch(
            name=row[0],
            pid=int(row[1] or 0),
            port=int(row[2] or 0),
            token=str(row[3] or ""),
            started_at=float(row[4] or 0.0),
            log_path=str(row[5] or ""),
        )

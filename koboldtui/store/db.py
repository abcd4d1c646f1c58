"""The one SQLite file of an installation, opened the same way everywhere, schema kept by migrations.

Every package that persists something (GPU priority, instance specs, launches, settings,
Horde history) goes through ``open_database`` so WAL, foreign keys and the busy timeout
are always on, and an old file is upgraded in place by the versioned migrations below.
A file that cannot be used (read-only, disk full, damaged, emptied) is reported in one
line that says what is safe (``faults.py``) and is never replaced behind the user's back.
"""

from __future__ import annotations

import errno
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from koboldtui.paths import AppPaths, app_paths
from koboldtui.store.faults import StorageError, explain

# Append-only: never edit a migration that has shipped; add a new one instead. A migration
# is a script (statements split by SQLite's own parser, so a ';' inside a string or a
# trigger body is safe) or a tuple of single statements.
MIGRATIONS: tuple[str | tuple[str, ...], ...] = (
    # 1: the initial schema (other engineers write against these tables).
    """
    CREATE TABLE gpus (
        uuid TEXT PRIMARY KEY,
        priority INTEGER NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        name TEXT,
        present INTEGER NOT NULL DEFAULT 1,
        last_seen REAL
    );
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE launches (
        name TEXT PRIMARY KEY REFERENCES instances(name) ON DELETE CASCADE,
        pid INTEGER,
        port INTEGER,
        token TEXT,
        started_at REAL,
        log_path TEXT
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE horde_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT,
        job_id TEXT,
        state TEXT,
        kudos REAL,
        tokens INTEGER,
        seconds REAL,
        finished_at REAL
    );
    """,
    # 2: what kind of server an instance is (serve | command | remote), its command line,
    # health path and remote URL: columns computed from the spec JSON (VIRTUAL, so the
    # JSON stays the one source of truth), for queries such as the port rule.
    """
    ALTER TABLE instances ADD COLUMN kind TEXT
        GENERATED ALWAYS AS (coalesce(json_extract(spec, '$.kind'), 'serve')) VIRTUAL;
    ALTER TABLE instances ADD COLUMN cmd TEXT
        GENERATED ALWAYS AS (json_extract(spec, '$.command')) VIRTUAL;
    ALTER TABLE instances ADD COLUMN health TEXT
        GENERATED ALWAYS AS (json_extract(spec, '$.health')) VIRTUAL;
    ALTER TABLE instances ADD COLUMN url TEXT
        GENERATED ALWAYS AS (json_extract(spec, '$.url')) VIRTUAL
    """,
    # 3: one record of each instance's run (koboldtui.store.runs): pid, launch token, state,
    # stop mark, pending restart, last error, who started it. It replaces the launches
    # table (its rows move over: an instance running during the upgrade is still adopted)
    # and the <data>/run/<name>.json files; `launches` stays as a view (with INSTEAD OF
    # triggers) over the runs that have a process, for readers and writers of the old table.
    """
    CREATE TABLE runs (
        name TEXT PRIMARY KEY REFERENCES instances(name) ON DELETE CASCADE,
        state TEXT NOT NULL DEFAULT 'stopped',
        pid INTEGER,
        port INTEGER,
        token TEXT,
        started_at REAL,
        log_path TEXT,
        restarts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        started_by TEXT,
        owner TEXT,
        stop_at REAL,
        restart_at REAL,
        restart_owner TEXT,
        updated_at REAL NOT NULL DEFAULT 0,
        looked_at REAL
    );
    INSERT INTO runs (name, state, pid, port, token, started_at, log_path, updated_at)
        SELECT name, 'starting', pid, port, token, started_at, log_path, coalesce(started_at, 0)
        FROM launches;
    DROP TABLE launches;
    CREATE VIEW launches AS
        SELECT name, pid, port, token, started_at, log_path FROM runs WHERE pid IS NOT NULL;
    CREATE TRIGGER launches_insert INSTEAD OF INSERT ON launches BEGIN
        INSERT INTO runs (name, state, pid, port, token, started_at, log_path)
            VALUES (NEW.name, 'starting', NEW.pid, NEW.port, NEW.token, NEW.started_at, NEW.log_path)
            ON CONFLICT(name) DO UPDATE SET state = 'starting', pid = excluded.pid,
                port = excluded.port, token = excluded.token, started_at = excluded.started_at,
                log_path = excluded.log_path;
    END;
    CREATE TRIGGER launches_delete INSTEAD OF DELETE ON launches BEGIN
        UPDATE runs SET pid = NULL, token = NULL,
            state = CASE WHEN state IN ('starting', 'loading', 'ready', 'stopping')
                    THEN 'stopped' ELSE state END
            WHERE name = OLD.name;
    END;
    """,
)

BUSY_TIMEOUT_MS = 5000


class DatabaseError(StorageError):
    """The database file cannot be opened or upgraded; the message says what to do."""


def statements(migration: str | tuple[str, ...]) -> Iterator[str]:
    """The single statements of a migration, cut where SQLite says a statement is complete."""
    if not isinstance(migration, str):
        yield from (s for s in migration if s.strip())
        return
    buffer = ""
    for char in migration:
        buffer += char
        if char == ";" and sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\n;"):
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        yield buffer.strip()


class SharedConnection(sqlite3.Connection):
    """A connection several threads may share (the panel's pollers and actions do).

    Every statement and every ``transaction`` takes the connection's re-entrant lock, so a
    transaction in one thread never interleaves with statements from another ("cannot
    start a transaction within a transaction", or one thread committing another's
    half-done work).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.RLock()

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        with self.lock:
            return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        with self.lock:
            return super().executemany(*args, **kwargs)

    def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        with self.lock:
            return super().executescript(*args, **kwargs)


_fallback_lock = threading.RLock()  # for connections not opened by open_database


class transaction:
    """``with transaction(conn):`` runs several statements atomically (the connection autocommits otherwise).

    Holds the connection's lock for the whole transaction, so other threads sharing the
    connection wait instead of slipping statements into it.
    """

    def __init__(self, conn: sqlite3.Connection, *, immediate: bool = True) -> None:
        self._conn = conn
        self._begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        self._lock = getattr(conn, "lock", _fallback_lock)

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._conn.execute(self._begin)
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._conn.execute("COMMIT")
            else:
                self._conn.execute("ROLLBACK")
        finally:
            self._lock.release()


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest migration applied to this file (0 for a new file)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file lacks, each in its own transaction; return the version.

    The version is re-read under the write lock, so two processes opening a new file at
    the same moment do not both apply the same migration.
    """
    current = schema_version(conn)
    if current > len(MIGRATIONS):
        raise DatabaseError(
            f"the database has schema version {current} but this koboldtui knows only "
            f"{len(MIGRATIONS)}: upgrade koboldtui, or point KOBOLDTUI_HOME elsewhere"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        with transaction(conn):
            if schema_version(conn) >= version:
                continue  # another process got there first
            for statement in statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )
    return len(MIGRATIONS)


def open_database(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the SQLite file at ``path`` with WAL, FKs, a busy timeout and the current schema.

    The connection is in autocommit mode (``isolation_level=None``): every statement is
    committed at once, so a forgotten ``commit()`` never holds the write lock against the
    other processes. Use ``with transaction(conn):`` to group statements atomically. Rows
    are ``sqlite3.Row`` (index by column name).
    """
    path = Path(path)
    _refuse_emptied_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create(path)
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
            isolation_level=None, factory=SharedConnection,
        )
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseError(
            explain(exc, path) or f"cannot open the database {path}: {exc}; check the folder "
            "is writable or set KOBOLDTUI_HOME to another folder"
        ) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
    except (sqlite3.Error, OSError) as exc:
        conn.close()
        raise DatabaseError(
            explain(exc, path) or f"the database {path} could not be read or upgraded ({exc}); "
            "koboldtui left it untouched: keep the file and report this"
        ) from exc
    except DatabaseError:
        conn.close()
        raise
    return conn


def _create(path: Path) -> None:
    """Make a new database at ``path`` whole, then link it into place: the file never exists
    empty, so a 0-byte file at ``path`` is always one that was emptied.

    The schema is written to a unique temp file beside ``path`` and hard-linked to ``path``;
    when another process got there first (EEXIST), its file is the one used.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")  # kept in the file's header
            migrate(conn)
        finally:
            conn.close()  # the last connection checkpoints the WAL into the file
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it meanwhile: use theirs
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if not path.exists():  # a file system without hard links
                os.rename(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)


def _refuse_emptied_file(path: Path) -> None:
    """A database file that was emptied (0 bytes, no WAL) must not quietly become a new one.

    SQLite would take it for a brand-new database and every saved instance would look
    lost. koboldtui never leaves a new database empty (``_create``), so every 0-byte file
    is refused, however young.
    """
    try:
        info = path.stat()
    except OSError:
        return  # absent: a new installation
    wal = path.with_name(path.name + "-wal")
    try:
        wal_bytes = wal.stat().st_size
    except OSError:
        wal_bytes = 0
    if info.st_size == 0 and wal_bytes == 0:
        raise DatabaseError(
            f"the database {path} is empty (0 bytes): it was truncated (a full disk or an "
            "interrupted copy?), so koboldtui will not treat it as new: restore it from a "
            f"backup, or if you want to start afresh, move it aside yourself (mv {path} "
            f"{path}.empty) and run koboldtui again"
        )


def default_database(paths: AppPaths | None = None) -> sqlite3.Connection:
    """Open the installation's database (``KOBOLDTUI_HOME`` or the platform data dir)."""
    paths = (paths or app_paths()).ensure()
    return open_database(paths.database)

"""Disk and database faults in one line: what happened, and what is safe to do about it.

A read-only folder, a full disk and a damaged file need different advice. The one thing
never to say is "delete it": a database that cannot be written right now (full disk,
read-only mount) is usually intact, and deleting it would make every saved instance
look lost. Damage is only ever answered with "keep it, restore or recover it, or use
another KOBOLDTUI_HOME".
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Less free space than this where the file lives, and SQLite's "disk I/O error" is the full disk
# (it cannot create or grow the WAL's -shm/-wal files), not damage.
NEARLY_FULL_BYTES = 1 << 20


def free_bytes(path: str | Path | None) -> int | None:
    """Bytes free to us on the file system holding ``path`` (its nearest existing folder)."""
    if path is None:
        return None
    here = Path(path)
    for folder in (here, *here.parents):
        try:
            info = os.statvfs(folder)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return None


class StorageError(RuntimeError):
    """A file or database koboldtui needs cannot be used; the message says what to do."""


def _kind(exc: BaseException, path: str | Path | None = None) -> str | None:
    """"read-only", "full", "damaged", "io" or None (not a storage fault we can name)."""
    if isinstance(exc, OSError):
        if exc.errno in READ_ONLY_ERRNOS:
            return "read-only"
        if exc.errno in FULL_ERRNOS:
            return "full"
        return None
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if "readonly" in text or "read-only" in text or "unable to open database file" in text:
            return "read-only"
        if "disk is full" in text or "disk full" in text:
            return "full"
        if "disk i/o error" in text:
            free = free_bytes(path)
            return "full" if free is not None and free < NEARLY_FULL_BYTES else "io"
        if "not a database" in text or "malformed" in text:
            return "damaged"
    return None


def explain(exc: BaseException, path: str | Path | None = None) -> str | None:
    """One line for a storage fault (None when ``exc`` is not one): what, why, what is safe."""
    kind = _kind(exc, path)
    where = f" {path}" if path else ""
    if kind == "read-only":
        return (f"cannot write{where}: the folder or file is read-only ({exc}); nothing was "
                "changed and your saved data is intact: make it writable, or set KOBOLDTUI_HOME "
                "to a writable folder")
    if kind == "full":
        return (f"cannot write{where}: the disk is full ({exc}); nothing saved before was lost: "
                "free some space and try again (do not delete the database)")
    if kind == "io":
        return (f"cannot read or write{where}: the disk reported an error ({exc}); koboldtui left the "
                "file untouched: check the disk (`dmesg`), keep the file, and if `sqlite3 FILE "
                "'PRAGMA integrity_check'` does not say ok, restore a backup or try `sqlite3 FILE .recover`")
    if kind == "damaged":
        return (f"the database{where} cannot be read: it looks damaged ({exc}); koboldtui left it "
                "untouched: keep the file, restore a backup or try `sqlite3 FILE .recover`, or "
                "set KOBOLDTUI_HOME to another folder to start afresh without it")
    return None


def as_storage_error(exc: BaseException, path: str | Path | None = None) -> StorageError | None:
    """``exc`` as a StorageError with its one-line explanation, or None when it is something else."""
    words = explain(exc, path)
    return StorageError(words) if words else None

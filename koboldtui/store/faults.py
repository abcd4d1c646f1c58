"""Disk and database faults in one line: what happened, and what is safe to do about it.

A read-only folder, a full disk and a damaged file need different advice. The one thing
never to say is "delete it": a database that cannot be written right now (full disk,
read-only mount) is usually intact, and deleting it would make every saved instance
look lost. Damage is only ever answered with "keep it, restore or recover it, or use
another KOBOLDTUI_HOME".
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class StorageError(RuntimeError):
    """A file or database koboldtui needs cannot be used; the message says what to do."""


def _kind(exc: BaseException) -> str | None:
    """"read-only", "full", "damaged" or None (not a storage fault we can name)."""
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
        if "not a database" in text or "malformed" in text or "disk i/o error" in text:
            return "damaged"
    return None


def explain(exc: BaseException, path: str | Path | None = None) -> str | None:
    """One line for a storage fault (None when ``exc`` is not one): what, why, what is safe."""
    kind = _kind(exc)
    where = f" {path}" if path else ""
    if kind == "read-only":
        return (f"cannot write{where}: the folder or file is read-only ({exc}); nothing was "
                "changed and your saved data is intact: make it writable, or set KOBOLDTUI_HOME "
                "to a writable folder")
    if kind == "full":
        return (f"cannot write{where}: the disk is full ({exc}); nothing saved before was lost: "
                "free some space and try again (do not delete the database)")
    if kind == "damaged":
        return (f"the database{where} cannot be read: it looks damaged ({exc}); koboldtui left it "
                "untouched: keep the file, restore a backup or try `sqlite3 FILE .recover`, or "
                "set KOBOLDTUI_HOME to another folder to start afresh without it")
    return None


def as_storage_error(exc: BaseException, path: str | Path | None = None) -> StorageError | None:
    """``exc`` as a StorageError with its one-line explanation, or None when it is something else."""
    words = explain(exc, path)
    return StorageError(words) if words else None

"""Small user preferences (theme, extra model folders) that survive restarts, kept as JSON in SQLite."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def get_setting(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    """The stored value for ``key`` (decoded from JSON), or ``default`` if unset or unreadable."""
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    if row is None:
        return default
    try:
        return json.loads(row[0])
    except ValueError:
        return default


def set_setting(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """Store ``value`` (anything JSON can encode) under ``key``, replacing the old one."""
    encoded = json.dumps(value)
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, encoded),
    )
    if conn.in_transaction and conn.isolation_level is not None:
        conn.commit()


def delete_setting(conn: sqlite3.Connection, key: str) -> None:
    """Forget ``key`` so reads fall back to their default."""
    conn.execute("DELETE FROM settings WHERE key = ?", (key,))
    if conn.in_transaction and conn.isolation_level is not None:
        conn.commit()


class Settings:
    """The key/value API bound to one connection, for callers that keep a store object around."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, key: str, default: Any = None) -> Any:
        """The value for ``key`` or ``default``."""
        return get_setting(self._conn, key, default)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        set_setting(self._conn, key, value)

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        delete_setting(self._conn, key)

"""The box's current model: where KoboldAI routes (which carry no model name) go.

Kept in the store's settings so ``koboldtui gateway use NAME``, the panel and KoboldCpp's
admin ``reload_config`` from a client all change the same fact, and it survives restarts.
"""

from __future__ import annotations

import sqlite3
import threading

from koboldtui.store.settings import get_setting, set_setting

SETTING = "gateway.current_model"


class CurrentModel:
    """The saved current model name, cached; its own connection and lock (used from threads)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn, self._lock = conn, threading.Lock()
        self._name: str | None = None
        self.reload()

    def reload(self) -> str | None:
        """Re-read the saved name (another process may have switched it)."""
        with self._lock:
            value = get_setting(self._conn, SETTING)
            self._name = value if isinstance(value, str) and value else None
            return self._name

    @property
    def name(self) -> str | None:
        return self._name

    def set(self, name: str) -> None:
        with self._lock:
            set_setting(self._conn, SETTING, name)
            self._name = name

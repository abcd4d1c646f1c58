"""The box's current model: where KoboldAI routes (which carry no model name) go.

Kept in the store's settings so ``koboldtui gateway use NAME``, the panel and KoboldCpp's
admin ``reload_config`` from a client all change the same fact, and it survives restarts.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

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


class UnknownModelName(ValueError):
    """``use NAME`` named neither an instance nor a pool; the message lists the names that exist."""


def model_choices(conn: sqlite3.Connection, secrets_file: Path) -> list[tuple[str, str]]:
    """Every name the current model may be: ``(name, "instance" | "pool")`` (the gateway itself is not one)."""
    from koboldtui.control.secrets import InstanceSecrets
    from koboldtui.gateway.backends import BackendTable
    from koboldtui.store.instances import InstanceStore

    table = BackendTable(InstanceStore(conn), InstanceSecrets(secrets_file))
    table.refresh()
    instances = {b.name for b in table.all()}
    return [(name, "instance" if name in instances else "pool") for name in table.known_names()]


def use_model(conn: sqlite3.Connection, secrets_file: Path, name: str) -> None:
    """Make ``name`` the box's current model (``koboldtui gateway use NAME`` and the panel's picker both
    come here); a running gateway re-reads it within seconds. Raises ``UnknownModelName``."""
    names = [n for n, _ in model_choices(conn, secrets_file)]
    if name not in names:
        raise UnknownModelName(f"there is no instance or pool named {name!r} "
                               f"(models: {', '.join(names) or 'none saved yet'})")
    CurrentModel(conn).set(name)

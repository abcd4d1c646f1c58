"""Per-instance secrets (Horde key, API key) in the 0600 secrets file, never in the spec JSON.

The file is TOML shared with other parts of koboldtui, so we rewrite only the
``[instances.NAME]`` tables and keep the rest. TOML is written by ``tomli-w``. Every
read-modify-write holds an exclusive ``flock`` on ``secrets.toml.lock``, so two shells (or
the panel and a shell) setting keys at once never lose each other's change; the new text
goes to a unique temp file created with mode 0600, then ``os.replace``, so the keys are
never readable by others, even briefly, and a crash never leaves half a file.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from koboldtui.store.faults import StorageError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SECTION = "instances"
SECRET_FIELDS = ("horde_key", "api_key")
_lock = threading.Lock()  # flock excludes other processes; this, other threads of ours


class SecretsError(StorageError):
    """The secrets file cannot be read or written; the message says what to do (the CLI
    prints it as one line, as every storage fault)."""


class InstanceSecrets:
    """Read and write the secrets of named instances in one TOML file with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretsError(f"cannot read the secrets file {self.path}: {exc}; check its "
                               "permissions (it should be yours, mode 0600)") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SecretsError(
                f"the secrets file {self.path} is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}): "
                f"{self._fix}") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SecretsError(f"the secrets file {self.path} is not valid TOML ({exc}): {self._fix}") from exc
        instances = data.get(SECTION, {})
        wrong = (not isinstance(instances, dict) and f"`{SECTION}` is {type(instances).__name__}") or next(
            (f"`{SECTION}.{name}` is {type(table).__name__}" for name, table in instances.items()
             if not isinstance(table, dict)), None)
        if wrong:
            raise SecretsError(
                f"the secrets file {self.path} has the wrong shape: {wrong}, where a table "
                f"[{SECTION}.NAME] of horde_key / api_key is expected: {self._fix}")
        return data

    @property
    def _fix(self) -> str:
        return (f"fix it by hand, or move it aside (mv {self.path} {self.path}.bad) and set the keys "
                "again; it holds Horde/API keys: keep a copy")

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the cross-process lock (and ours) around one read-modify-write."""
        with _lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path.with_name(self.path.name + ".lock"),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise SecretsError(
                    f"cannot lock the secrets file {self.path}: {exc}; the keys were not changed"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _write(self, data: dict[str, Any]) -> None:
        unique = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
        tmp = self.path.with_name(f"{self.path.name}.{unique}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                tomli_w.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SecretsError(
                f"cannot write the secrets file {self.path}: {exc}; the keys were not changed"
            ) from exc

    def get(self, name: str) -> dict[str, str]:
        """The secrets of instance ``name`` ({} when none)."""
        table = self._read().get(SECTION, {}).get(name, {})
        return {k: str(v) for k, v in table.items() if k in SECRET_FIELDS and v}

    def set(self, name: str, **values: str | None) -> None:
        """Set (a value) or clear (None / "") secrets of ``name``; other entries stay as they were."""
        unknown = set(values) - set(SECRET_FIELDS)
        if unknown:
            raise ValueError(f"unknown secret field(s): {', '.join(sorted(unknown))}")
        with self._exclusive():
            data = self._read()
            instances = dict(data.get(SECTION, {}))
            table = dict(instances.get(name, {}))
            for key, value in values.items():
                if value:
                    table[key] = value
                else:
                    table.pop(key, None)
            if table:
                instances[name] = table
            else:
                instances.pop(name, None)
            data[SECTION] = instances
            if not instances:
                data.pop(SECTION)
            self._write(data)

    def remove(self, name: str) -> None:
        """Forget every secret of ``name`` (when the instance is deleted)."""
        with self._exclusive():
            data = self._read()
            instances = dict(data.get(SECTION, {}))
            if name not in instances:
                return
            instances.pop(name)
            if instances:
                data[SECTION] = instances
            else:
                data.pop(SECTION, None)
            self._write(data)

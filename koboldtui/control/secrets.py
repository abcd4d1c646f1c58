"""Per-instance secrets (Horde key, API key) in the 0600 secrets file, never in the spec JSON.

The file is TOML shared with other parts of koboldtui, so we rewrite only the
``[instances.NAME]`` tables and keep the rest. Writes go through a temp file created
with mode 0600 and ``os.replace``, so the keys are never readable by others, even briefly.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SECTION = "instances"
SECRET_FIELDS = ("horde_key", "api_key")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_lock = threading.Lock()


class SecretsError(RuntimeError):
    """The secrets file cannot be read or written; the message says what to do."""


def _key(text: str) -> str:
    return text if _BARE_KEY.match(text) else _string(text)


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if ord(c) >= 0x20 and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _string(str(value))


def _dump(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append("[" + ".".join(_key(p) for p in prefix) + "]")
    for key, value in scalars.items():
        lines.append(f"{_key(key)} = {_value(value)}")
    if scalars:
        lines.append("")
    for key, value in tables.items():
        lines += _dump(value, prefix + (key,))
    return lines


class InstanceSecrets:
    """Read and write the secrets of named instances in one TOML file with mode 0600."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as fh:
                return tomllib.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SecretsError(
                f"cannot read the secrets file {self.path}: {exc}; fix or remove it "
                "(it holds Horde/API keys) and set the keys again"
            ) from exc

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        text = "\n".join(_dump(data)).rstrip() + "\n"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SecretsError(f"cannot write the secrets file {self.path}: {exc}") from exc

    def get(self, name: str) -> dict[str, str]:
        """The secrets of instance ``name`` ({} when none)."""
        table = self._read().get(SECTION, {}).get(name, {})
        return {k: str(v) for k, v in table.items() if k in SECRET_FIELDS and v}

    def set(self, name: str, **values: str | None) -> None:
        """Set (a value) or clear (None / "") secrets of ``name``; other entries stay as they were."""
        unknown = set(values) - set(SECRET_FIELDS)
        if unknown:
            raise ValueError(f"unknown secret field(s): {', '.join(sorted(unknown))}")
        with _lock:
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
        with _lock:
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

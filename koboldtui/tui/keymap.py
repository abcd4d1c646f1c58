"""User key remapping: ``[keymap]`` in config.toml maps binding ids to keys.

Every ``Binding`` in the panel has an ``id``; a user who types over SSH with an odd
terminal can move any action to keys that arrive intact, without editing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib


@dataclass(frozen=True)
class KeymapResult:
    """Binding id → comma-separated keys, and problems worth showing the user."""

    keymap: dict[str, str]
    problems: tuple[str, ...]


def load_keymap(config_file: Path, known_ids: set[str]) -> KeymapResult:
    """Read ``[keymap]`` from the config file; skip (and report) unknown ids or bad values."""
    if not config_file.exists():
        return KeymapResult({}, ())
    try:
        data = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return KeymapResult({}, (f"{config_file}: cannot read the config ({exc}); keys not remapped",))
    table = data.get("keymap", {})
    if not isinstance(table, dict):
        return KeymapResult({}, (f"{config_file}: [keymap] must be a table of id = \"keys\"",))
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for binding_id, keys in table.items():
        if binding_id not in known_ids:
            problems.append(
                f"[keymap] {binding_id!r} is not a binding id; the help screen (?) lists them"
            )
            continue
        if isinstance(keys, list):
            keys = ",".join(str(k) for k in keys)
        if not isinstance(keys, str) or not keys.strip():
            problems.append(f"[keymap] {binding_id} must be a key like \"ctrl+n\" or a list of keys")
            continue
        keymap[binding_id] = keys.replace(" ", "")
    return KeymapResult(keymap, tuple(problems))

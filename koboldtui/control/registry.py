"""Add, edit and remove instance specs with every check done first, so a refused change leaves nothing behind.

The CLI and the panel both go through here: the model path is checked (exists, is GGUF),
the spec is validated, the row is written, and only then the secrets; if the secrets
cannot be written the row is taken back out.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from koboldtui.control.secrets import InstanceSecrets, SecretsError
from koboldtui.control.spec import BUNDLED, KIND_SERVE, InstanceSpec, SpecError
from koboldtui.models.bundled import resolve_model_path
from koboldtui.paths import AppPaths
from koboldtui.store.instances import InstanceStore, StoredInstance

UNSET: Any = object()


def _catalog_lookup(name: str, paths: AppPaths, conn: sqlite3.Connection | None) -> Path | None:
    """A model picked by its catalogue name (the file stem the picker shows), if one matches.

    Looks through the same folders as ``koboldtui.models.catalog`` by file name only, so
    saving a spec never reads every GGUF header nor assembles the bundled model.
    """
    folders = [paths.models_dir]
    if conn is not None:
        try:
            from koboldtui.models.catalog import model_dirs
        except ModuleNotFoundError:  # pragma: no cover - partial checkout
            model_dirs = None
        if model_dirs is not None:
            folders += model_dirs(conn)
    for folder in folders:
        for pattern in (f"{name}.gguf", f"*/{name}.gguf", f"*/*/{name}.gguf", f"*/*/*/{name}.gguf"):
            for match in sorted(folder.glob(pattern)):
                if match.is_file():
                    return match
    return None


def normalise_model(
    model: str | None, paths: AppPaths, conn: sqlite3.Connection | None = None
) -> str:
    """'bundled' stays; a catalogue name or a path must be an existing GGUF, stored as an absolute path."""
    if model in (None, "", BUNDLED):
        return BUNDLED
    path = Path(model).expanduser()
    if not path.exists() and os.sep not in model and not model.endswith(".gguf"):
        found = _catalog_lookup(model, paths, conn)
        if found is None:
            raise SpecError(
                f"model {model!r} is neither a file nor a model in the catalogue: pass --model PATH "
                "to a .gguf file, or see `koboldtui models` for the names"
            )
        path = found
    if not path.is_absolute():
        path = Path(os.getcwd()) / path
    try:
        resolved = resolve_model_path(str(path), paths)
    except (FileNotFoundError, ValueError) as exc:
        raise SpecError(str(exc)) from exc
    return str(resolved.resolve())


class InstanceRegistry:
    """The saved instances and their secrets, changed only by complete, validated edits."""

    def __init__(self, store: InstanceStore, paths: AppPaths) -> None:
        self.store = store
        self.paths = paths
        self.secrets = InstanceSecrets(paths.secrets_file)

    def get(self, name: str) -> InstanceSpec:
        """The spec of ``name`` (``UnknownInstanceError`` otherwise)."""
        return InstanceSpec.from_dict(self.store.get(name).spec)

    def list(self) -> list[InstanceSpec]:
        """Every saved spec, sorted by name."""
        return [InstanceSpec.from_dict(row.spec) for row in self.store.all()]

    def rows(self) -> list[StoredInstance]:
        return self.store.all()

    def _model_for_kind(self, kind: str, model: str | None) -> str:
        """A GGUF for ``koboldtui serve``; any existing file or folder for a command's ``{model}``."""
        if kind == KIND_SERVE:
            return normalise_model(model, self.paths, self.store.conn)
        if model in (None, "", BUNDLED):
            return BUNDLED
        path = Path(model).expanduser()
        path = path if path.is_absolute() else Path(os.getcwd()) / path
        if not path.exists():
            raise SpecError(f"model {model!r} does not exist: pass --model with an existing path")
        return str(path.resolve())

    def _check(self, spec: InstanceSpec, secrets: dict[str, str]) -> None:
        problems = spec.validate(api_key=secrets.get("api_key"), horde_key=secrets.get("horde_key"))
        if problems:
            raise SpecError("; ".join(problems))

    def add(
        self, spec: InstanceSpec, *, horde_key: str | None = None, api_key: str | None = None
    ) -> InstanceSpec:
        """Validate and save a new instance (and its secrets); all or nothing."""
        spec = spec.with_changes(model=self._model_for_kind(spec.kind, spec.model))
        secrets = {k: v for k, v in (("horde_key", horde_key), ("api_key", api_key)) if v}
        self._check(spec, secrets)
        self.store.add(spec.name, spec.to_dict())
        if secrets:
            try:
                self.secrets.set(spec.name, **secrets)
            except (SecretsError, OSError):
                self.store.remove(spec.name)
                raise
        return spec

    def preview(
        self,
        name: str,
        changes: dict[str, Any],
        *,
        horde_key: str | None = UNSET,
        api_key: str | None = UNSET,
    ) -> tuple[InstanceSpec, dict[str, str]]:
        """The validated spec and secrets ``edit`` would save, without saving (raises ``SpecError``)."""
        current = self.get(name)
        changes = dict(changes)
        if "model" in changes:
            changes["model"] = self._model_for_kind(changes.get("kind", current.kind), changes["model"])
        if "name" in changes and changes["name"] != name:
            raise SpecError("an instance cannot be renamed: add a new one and remove the old one")
        spec = current.with_changes(**changes)
        secrets = dict(self.secrets.get(name))
        for key, value in (("horde_key", horde_key), ("api_key", api_key)):
            if value is not UNSET:
                if value:
                    secrets[key] = value
                else:
                    secrets.pop(key, None)
        self._check(spec, secrets)
        owner = self.store.port_owner(spec.port, exclude=name)
        if owner is not None:
            raise SpecError(
                f"port {spec.port} is already used by instance {owner!r}: pick another port with "
                "--port (two instances can never share a port)"
            )
        return spec, secrets

    def edit(
        self,
        name: str,
        changes: dict[str, Any],
        *,
        horde_key: str | None = UNSET,
        api_key: str | None = UNSET,
    ) -> InstanceSpec:
        """Apply ``changes`` (spec field → value) and/or new secrets ("" clears one); all or nothing."""
        current = self.get(name)
        old_secrets = self.secrets.get(name)
        spec, secrets = self.preview(name, changes, horde_key=horde_key, api_key=api_key)
        self.store.update(name, spec.to_dict())
        if secrets != old_secrets:
            try:
                self.secrets.set(name, **{k: secrets.get(k) for k in ("horde_key", "api_key")})
            except (SecretsError, OSError):
                self.store.update(name, current.to_dict())
                raise
        return spec

    def remove(self, name: str) -> None:
        """Delete the spec, its launch row and its secrets (the caller stops it first)."""
        self.store.remove(name)
        self.secrets.remove(name)


def reconfigure(
    registry: InstanceRegistry,
    stop: Callable[[str], object],
    start: Callable[[str], object],
    is_running: Callable[[str], bool],
    name: str,
    changes: dict[str, Any],
) -> InstanceSpec:
    """Change a spec that may be running (e.g. switch its model): stop, change, start again if it ran."""
    was_running = is_running(name)
    registry.preview(name, changes)  # unknown name or a bad change: fail before stopping anything
    if was_running:
        stop(name)
    spec = registry.edit(name, changes)
    if was_running:
        start(name)
    return spec

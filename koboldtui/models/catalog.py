"""The models a person can pick: GGUF files in the models dir and their own folders, plus the bundled one.

Each entry carries what the picker shows (size, quantisation, architecture, context) from
the GGUF header; a broken file is listed with the reason instead of failing the listing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from koboldtui.models.bundled import BUNDLED_MODEL_ALIAS, BundledModelError, bundled_model_path
from koboldtui.models.metadata import GgufError, read_metadata
from koboldtui.models.model_check import weights_problem
from koboldtui.paths import AppPaths, app_paths
from koboldtui.store.settings import get_setting, set_setting

MODEL_DIRS_KEY = "model_dirs"
_MAX_DEPTH = 3  # how far below a models folder to look (publisher/model/file.gguf layouts)


@dataclass(frozen=True)
class CatalogEntry:
    """One pickable model; ``error`` is set (and the metadata fields None) for a broken file."""

    name: str  # what `--model` and the picker show: "bundled" or the file stem
    path: Path | None
    size: int | None
    quantization: str | None
    architecture: str | None
    context_length: int | None
    layers: int | None
    source: str  # "bundled", "models dir" or the user folder it came from
    error: str | None = None

    @property
    def usable(self) -> bool:
        """Whether an instance can be started with this model."""
        return self.error is None and self.path is not None

    def to_json(self) -> dict[str, object]:
        """The JSON shape of `koboldtui models --json`."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "size": self.size,
            "quantization": self.quantization,
            "architecture": self.architecture,
            "context_length": self.context_length,
            "layers": self.layers,
            "source": self.source,
            "error": self.error,
        }


def model_dirs(conn: sqlite3.Connection) -> list[Path]:
    """The folders the user added (in the order added)."""
    stored = get_setting(conn, MODEL_DIRS_KEY, [])
    return [Path(p) for p in stored if isinstance(p, str)] if isinstance(stored, list) else []


def add_model_dir(conn: sqlite3.Connection, folder: str | Path) -> Path:
    """Remember a folder to search for GGUF files; raises ValueError if it is not a folder."""
    path = Path(folder).expanduser().resolve()
    if not path.exists():
        raise ValueError(
            f"{path} does not exist: create it or give the folder that holds your .gguf files"
        )
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder: give the folder that holds it")
    dirs = model_dirs(conn)
    if path not in dirs:
        set_setting(conn, MODEL_DIRS_KEY, [str(p) for p in [*dirs, path]])
    return path


def remove_model_dir(conn: sqlite3.Connection, folder: str | Path) -> bool:
    """Forget a folder; returns whether it was known."""
    path = Path(folder).expanduser().resolve()
    dirs = model_dirs(conn)
    if path not in dirs:
        return False
    set_setting(conn, MODEL_DIRS_KEY, [str(p) for p in dirs if p != path])
    return True


def _gguf_files(folder: Path) -> Iterable[Path]:
    def walk(current: Path, depth: int) -> Iterable[Path]:
        try:
            children = sorted(current.iterdir())
        except OSError:
            return
        for child in children:
            if child.is_dir() and depth < _MAX_DEPTH and not child.name.startswith("."):
                yield from walk(child, depth + 1)
            elif child.is_file() and child.suffix.lower() == ".gguf":
                yield child

    yield from walk(folder, 0)


def describe(path: Path, name: str, source: str) -> CatalogEntry:
    """A catalogue entry for one file, never raising: a bad file gets ``error`` instead."""
    try:
        meta = read_metadata(path)
    except (GgufError, OSError, ValueError) as exc:
        size = path.stat().st_size if path.exists() else None
        return CatalogEntry(
            name, path, size, None, None, None, None, source, f"cannot read it: {exc}"
        )
    empty = weights_problem(meta)
    if empty:  # listed with why, never pickable
        return CatalogEntry(name, path, meta.file_size, None, meta.architecture, None, None, source, empty)
    return CatalogEntry(
        name,
        path,
        meta.file_size,
        meta.quantization,
        meta.architecture,
        meta.context_length,
        meta.block_count,
        source,
    )


def _is_split_part(path: Path) -> bool:
    """Shards 2..N of a split model ('-00002-of-00003.gguf') are loaded through shard 1."""
    stem = path.stem
    parts = stem.rsplit("-", 3)
    return len(parts) == 4 and parts[2] == "of" and parts[1].isdigit() and int(parts[1]) > 1


def list_models(
    conn: sqlite3.Connection | None = None, paths: AppPaths | None = None
) -> list[CatalogEntry]:
    """Every model a person can pick: the bundled one first, then the models dir, then user folders."""
    paths = (paths or app_paths()).ensure()
    entries: list[CatalogEntry] = []
    seen: set[Path] = set()
    try:
        bundled = bundled_model_path(paths)
        entries.append(describe(bundled, BUNDLED_MODEL_ALIAS, "bundled"))
        seen.add(bundled.resolve())
    except BundledModelError as exc:
        entries.append(
            CatalogEntry(
                BUNDLED_MODEL_ALIAS, None, None, None, None, None, None, "bundled", str(exc)
            )
        )
    folders: list[tuple[Path, str]] = [(paths.models_dir, "models dir")]
    if conn is not None:
        folders += [(folder, str(folder)) for folder in model_dirs(conn)]
    for folder, source in folders:
        if not folder.is_dir():
            entries.append(
                CatalogEntry(
                    folder.name,
                    folder,
                    None,
                    None,
                    None,
                    None,
                    None,
                    source,
                    f"folder {folder} is missing: reconnect it or remove it from the model folders",
                )
            )
            continue
        for file in _gguf_files(folder):
            resolved = file.resolve()
            if resolved in seen or _is_split_part(file):
                continue
            seen.add(resolved)
            entries.append(describe(file, file.stem, source))
    return entries

"""A model typed as a path in the instance form: completion as you type, and a check in words.

Not every GGUF sits in a catalogue folder: the form also takes a path (absolute, ``~`` or
relative to where the panel runs), completes folders and ``.gguf`` files like a shell
(Tab or → accepts), and says next to the field why a path cannot be used.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.suggester import Suggester

from koboldtui.models.catalog import describe
from koboldtui.tui.widgets.text_field import TextField

GGUF_MAGIC = b"GGUF"


def complete_path(value: str, cwd: Path) -> str | None:
    """``value`` extended to the first folder or .gguf file it can name, or None."""
    if not value.strip():
        return None
    folder_text, prefix = os.path.split(os.path.expanduser(value))  # "a/." keeps its "." (Path drops it)
    folder = Path(folder_text) if os.path.isabs(folder_text) else cwd / folder_text
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return None
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            return value + name[len(prefix):] + "/"
        if name.lower().endswith(".gguf") and name != prefix:
            return value + name[len(prefix):]
    return None


def resolve_typed(text: str, cwd: Path) -> Path:
    """The absolute path a typed value means (``~`` expanded, relative to ``cwd``)."""
    expanded = Path(os.path.expanduser(text.strip()))
    return Path(os.path.abspath(expanded if expanded.is_absolute() else cwd / expanded))


def check_model_path(text: str, cwd: Path) -> tuple[str | None, str]:
    """(the absolute path, a one-line summary) when usable, else (None, why and what to do)."""
    path = resolve_typed(text, cwd)
    if not path.exists():
        return None, f"model path: {path} does not exist; type the path of a .gguf file (Tab completes)"
    if path.is_dir():
        return None, f"model path: {path} is a folder; pick a .gguf file in it (Tab completes)"
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        return None, f"model path: cannot read {path} ({exc.strerror or exc}); check its permissions"
    if magic != GGUF_MAGIC:
        return None, (f"model path: {path.name} is not a GGUF file (no GGUF magic); "
                      "convert it with llama.cpp's convert_hf_to_gguf.py or pick a .gguf")
    entry = describe(path, path.stem, "typed")
    if entry.error:
        return None, f"model path: {path.name} is broken: {entry.error}"
    size = f"{entry.size / 2**30:.1f} GiB" if entry.size else ""
    return str(path), " ".join(p for p in (entry.name, size, entry.quantization or "") if p)


class GgufPathSuggester(Suggester):
    """Suggests the rest of a folder or .gguf name; the folder is read off the UI thread."""

    def __init__(self, cwd: Path | None = None) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.cwd = cwd or Path.cwd()

    async def get_suggestion(self, value: str) -> str | None:
        return await asyncio.to_thread(complete_path, value, self.cwd)


class PathInput(TextField):
    """An Input where Tab accepts the shown completion (and moves on when there is none)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "complete_or_next", "Complete", show=False, id="form-path-complete"),
    ]

    def action_complete_or_next(self) -> None:
        suggestion = self._suggestion
        if self.cursor_at_end and suggestion and len(suggestion) > len(self.value):
            self.value = suggestion
            self.cursor_position = len(suggestion)
        else:
            self.screen.focus_next()

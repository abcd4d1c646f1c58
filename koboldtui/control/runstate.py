"""What a controller knows beyond the ``launches`` row — restarts, last error — shared via small files.

``koboldtui ps`` in one shell must show the restart count and the failure that
``koboldtui up`` in another shell saw; a JSON file per instance (atomic replace) carries
it without a schema change. A file is advice: the launch row and the live process win.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunState:
    """The last word of a controller about one instance."""

    state: str = "stopped"
    restarts: int = 0
    last_error: str | None = None
    token: str | None = None  # the launch it describes
    supervisor_pid: int | None = None
    updated_at: float = 0.0


class RunStateFiles:
    """``<data_dir>/run/<name>.json`` read and written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def read(self, name: str) -> RunState:
        """The stored state, or a fresh ``RunState`` when there is none or it is unreadable."""
        try:
            data = json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return RunState()
        known = RunState.__dataclass_fields__
        try:
            return RunState(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return RunState()

    def write(self, name: str, state: RunState) -> None:
        """Replace the file for ``name`` (never leaves a half-written file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)  # advisory only: losing it is not worth a crash

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

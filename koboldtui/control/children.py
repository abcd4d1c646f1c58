"""What this controller watches of each instance process it launched or adopted: the handle and the watchdog's clocks.

Only local facts live here (the ``Popen`` to read an exit code from, monotonic times of
the last progress and health answer, the log size); whether the instance runs, and in
which state, is the shared run record's (``run_book``). A child whose token is no longer
the record's is dropped: another controller stopped or replaced it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from koboldtui.control.process import pid_alive, still_ours


@dataclass
class Child:
    """One process of one launch, as this controller watches it."""

    name: str
    token: str
    pid: int
    host: str
    port: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None  # None when adopted (not our child)
    api_key: str | None
    health_path: str | None  # None: our /health; a command instance's path ("" until found)
    progress_at: float  # monotonic: last state change or log growth
    ready_at: float | None = None  # monotonic time it became ready
    health_checked_at: float | None = None  # the hang watchdog's last look
    answered_at: float | None = None  # ... and the last answer
    log_size: int = field(default=-1)
    kind: Any = None  # its kind object (koboldtui.control.kinds): how to probe it

    def exit_code_now(self) -> int | None | bool:
        """False while running; else the exit code (None when not our child and so unknown)."""
        if self.popen is not None:
            code = self.popen.poll()
            return False if code is None else code
        if not pid_alive(self.pid):
            return None
        if self.token and not still_ours(self.pid, self.token):
            return None  # the pid now belongs to someone else: our instance is gone
        return False

    def note_log_size(self) -> bool:
        """True when the log grew since the last look (loading progress without HTTP)."""
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return False
        grew = self.log_size >= 0 and size > self.log_size
        self.log_size = size
        return grew

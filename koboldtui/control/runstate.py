"""What a controller knows beyond the ``launches`` row — restarts, last error — shared via small files.

``koboldtui ps`` in one shell must show the restart count and the failure that
``koboldtui up`` in another shell saw; a JSON file per instance (atomic replace) carries
it without a schema change. A file is advice: the launch row and the live process win.

The same folder holds ``<name>.lock``: every controller takes an exclusive ``flock`` on it
around "is it running? → spawn → record the launch" (and around the bookkeeping of a
stop), so two controllers (the panel's autostart and ``koboldtui up``, or two shells)
never both start one instance.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_LOCK_TIMEOUT_S = 60.0


class LaunchLockTimeout(TimeoutError):
    """Another controller held ``<name>.lock`` for longer than we were willing to wait."""


@dataclass(frozen=True)
class RunState:
    """The last word of a controller about one instance."""

    state: str = "stopped"
    restarts: int = 0
    last_error: str | None = None
    token: str | None = None  # the launch it describes
    supervisor_pid: int | None = None
    updated_at: float = 0.0
    restart_pending: bool = False  # failed, and its controller will restart it after a backoff
    stopped_by_user_at: float | None = None  # wall time of the last explicit stop (any controller)


class RunStateFiles:
    """``<data_dir>/run/<name>.json`` read and written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def lock_path(self, name: str) -> Path:
        return self.folder / f"{name}.lock"

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
        # unique per writer: two threads of one process must not share (and steal) a temp file
        unique = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
        tmp = target.with_name(f"{target.name}.{unique}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
            os.replace(tmp, target)
        except OSError:
            tmp.unlink(missing_ok=True)  # advisory only: losing it is not worth a crash

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    @contextmanager
    def launch_lock(
        self,
        name: str,
        *,
        timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``<name>.lock`` (across processes); ``LaunchLockTimeout`` if busy.

        Each call opens its own file description, so two holders in one process exclude
        each other too (the supervisor keeps its own per-thread re-entrancy).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = clock() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if clock() >= deadline:
                        raise LaunchLockTimeout(
                            f"another controller has held {self.lock_path(name)} for "
                            f"{timeout_s:.0f} s"
                        ) from None
                    sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

"""Per-instance log files: rotated at start, tailed for failures, followed for ``koboldtui logs -f``.

A child's stdout and stderr go straight into its file (no pipe the supervisor must
drain), so an instance keeps logging after the controller that started it is gone.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_KEEP = 2


def log_path_for(log_dir: Path, name: str) -> Path:
    """Where instance ``name`` logs (names are validated to be file-safe)."""
    return log_dir / f"{name}.log"


def rotate_if_large(
    path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP
) -> bool:
    """Shift ``x.log`` → ``x.log.1`` → ... ``x.log.<keep>`` when over ``max_bytes``; True if rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    if keep <= 0:
        path.unlink(missing_ok=True)
        return True
    oldest = path.with_name(f"{path.name}.{keep}")
    oldest.unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))
    return True


def tail_lines(path: Path | str, count: int = 20, *, max_bytes: int = 256 * 1024) -> list[str]:
    """The last ``count`` lines of a log (reading at most ``max_bytes`` from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # first line is probably cut
    return list(deque(lines, maxlen=count)) if count > 0 else []


LAUNCH_HEADER = "=== koboldtui: starting "


def launch_header(name: str, started: str, devices: str, command: str) -> str:
    """The line block the supervisor writes before each launch (``tail_of_last_launch`` finds it)."""
    return f"\n{LAUNCH_HEADER}{name} at {started} ({devices}) ===\n$ {command}\n"


def tail_of_last_launch(path: Path | str, count: int = 15) -> list[str]:
    """The last lines written by the latest launch only (a failure's cause, not older runs')."""
    lines = tail_lines(path, max(count, 200))
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith(LAUNCH_HEADER):
            lines = lines[index + 2 :]  # skip the header and the command line
            break
    return lines[-count:] if count > 0 else []


def follow(
    path: Path | str,
    *,
    start_lines: int = 20,
    poll_s: float = 0.25,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield the last lines, then new lines as they are written; reopens after rotation."""
    path = Path(path)
    yield from tail_lines(path, start_lines)
    position = path.stat().st_size if path.exists() else 0
    inode = path.stat().st_ino if path.exists() else None
    pending = b""
    while not should_stop():
        try:
            stat = path.stat()
        except FileNotFoundError:
            sleep(poll_s)
            continue
        if stat.st_ino != inode or stat.st_size < position:
            inode, position, pending = stat.st_ino, 0, b""  # rotated or truncated
        if stat.st_size > position:
            with open(path, "rb") as fh:
                fh.seek(position)
                chunk = fh.read()
            position += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode("utf-8", errors="replace")
        else:
            sleep(poll_s)

"""Child processes of instances: spawn in their own session, check liveness, stop the whole group.

Own session (``start_new_session=True``) so a dropped SSH session or a dead controller
does not take the instance down, and so SIGTERM/SIGKILL reach every process it made.
Liveness of a pid we did not spawn is read from ``/proc`` (a zombie counts as gone).

A pid we did not spawn (an adopted instance) may have been reused by a stranger after
our instance died: before every signal to such a pid, its launch token is looked for
again in the arguments of the leader or of a member of its group (``still_ours``).
A child we spawned cannot be reused before we reap it, so its ``Popen`` is proof enough.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import koboldtui

# A command instance's launch token travels in its environment (its argv is the user's).
LAUNCH_TOKEN_ENV = "KOBOLDTUI_LAUNCH_TOKEN"
CHILD_SECRET_VARS = frozenset({"KOBOLDTUI_API_KEY", "KOBOLDTUI_HORDE_KEY"})
PACKAGE_ROOT = str(Path(koboldtui.__file__).resolve().parent.parent)


def serve_command(argv: Sequence[str], *, python: str | None = None) -> list[str]:
    """The command line that runs ``koboldtui <argv>`` with this interpreter."""
    return [python or sys.executable, "-m", "koboldtui.cli", *argv]


def child_environment(base: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """The env of a child: ours, plus overrides, with this koboldtui importable and output unbuffered.

    Secrets never come from our own environment: a key exported for one instance must not
    leak into another (it would demand the wrong API key, or work the Horde on the wrong
    account). Each instance's own secrets arrive in ``overrides``.
    """
    env = {k: v for k, v in base.items() if k not in CHILD_SECRET_VARS}
    env.update(overrides)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if PACKAGE_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([PACKAGE_ROOT, *paths])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class SpawnedChild:
    """A child we started: its Popen (for the exit code) and where it logs."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid


def spawn(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    header: str | None = None,
) -> SpawnedChild:
    """Start ``command`` detached (own session), appending stdout+stderr to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        if header:
            log.write(header.encode("utf-8", errors="replace"))
            log.flush()
        popen = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            close_fds=True,
        )
    return SpawnedChild(popen=popen, log_path=log_path)


def _proc_state(pid: int) -> str | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces/parens: the state follows the last ')'
    return text.rpartition(")")[2].split()[0] if ")" in text else None


def pid_alive(pid: int | None) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    state = _proc_state(pid)
    return state not in ("Z", "X")


EXEC_SETTLE_S = 0.25  # how long a process may show no arguments while its exec completes


def _proc_strings(pid: int, what: str) -> list[bytes]:
    """``/proc/PID/cmdline`` or ``environ`` split at NULs; waits out the moment of an exec.

    Right after ``Popen`` returns (the child's exec has closed the error pipe) the kernel
    may still show an empty command line for a few milliseconds. Taking that for "not
    our instance" would record a live instance as gone and leave it running untracked, so
    an empty answer from a live process is read again, briefly.
    """
    deadline = time.monotonic() + EXEC_SETTLE_S
    while True:
        try:
            raw = Path(f"/proc/{pid}/{what}").read_bytes()
        except OSError:
            return []
        if raw or time.monotonic() >= deadline or not pid_alive(pid):
            return raw.split(b"\0")
        time.sleep(0.005)


def cmdline_has(pid: int, needle: str) -> bool:
    """True when ``needle`` is one of the arguments of ``pid`` (how a launch token is recognised)."""
    return needle.encode() in _proc_strings(pid, "cmdline")


def environ_has(pid: int, key: str, value: str) -> bool:
    """True when ``pid`` was started with ``key=value`` in its environment (our own user's only)."""
    return f"{key}={value}".encode() in _proc_strings(pid, "environ")


def carries_token(pid: int, token: str) -> bool:
    """True when ``pid`` runs with our launch ``token``: in its arguments (``koboldtui serve``)
    or in its environment (a command instance, whose command line is the user's)."""
    return cmdline_has(pid, token) or environ_has(pid, LAUNCH_TOKEN_ENV, token)


def _group_members(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def still_ours(pid: int, token: str) -> bool:
    """True when ``pid`` (or a live member of its group) still runs with our launch ``token``.

    False means the instance is gone and the pid may now belong to a stranger: never signal it.
    """
    if not token:
        return False
    if pid_alive(pid) and carries_token(pid, token):
        return True
    return any(carries_token(member, token) for member in _group_members(pid))


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # own session: pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_gone(
    pid: int,
    timeout_s: float,
    *,
    popen: subprocess.Popen[bytes] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until ``pid`` has exited (reaping it when it is our child); True if it did in time."""
    deadline = clock() + timeout_s
    while True:
        if popen is not None:
            if popen.poll() is not None:
                return True
        elif not pid_alive(pid):
            return True
        if clock() >= deadline:
            return False
        sleep(0.05)


def group_alive(pgid: int) -> bool:
    """True while any process of the group ``pgid`` is alive."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies: look for a live member
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        if len(fields) > 3 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def terminate_group(
    pid: int,
    *,
    popen: subprocess.Popen[bytes] | None = None,
    grace_s: float = 10.0,
    token: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """SIGTERM the group, wait ``grace_s``, then SIGKILL it; returns "term", "kill" or "gone".

    Without ``popen`` (a process we adopted), ``token`` is checked again before each
    signal (``still_ours``); a pid that no longer carries it is left alone ("gone").
    """

    def ours() -> bool:
        return popen is not None or token is None or still_ours(pid, token)

    if popen is not None and popen.poll() is not None and not group_alive(pid):
        return "gone"
    if popen is None and not pid_alive(pid) and not group_alive(pid):
        return "gone"
    if not ours():
        return "gone"
    _signal_group(pid, signal.SIGTERM)
    _signal_group(pid, signal.SIGCONT)  # a stopped (SIGSTOP) instance can then drain too
    if wait_gone(pid, grace_s, popen=popen, clock=clock, sleep=sleep):
        # the leader is gone; make sure nothing it started lingers
        if group_alive(pid) and ours():
            _signal_group(pid, signal.SIGKILL)
        return "term"
    if not ours():
        return "gone"
    _signal_group(pid, signal.SIGKILL)
    wait_gone(pid, 5.0, popen=popen, clock=clock, sleep=sleep)
    return "kill"

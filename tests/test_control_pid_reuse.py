"""After pid reuse, a stranger is never signalled: the launch token is checked again before each signal.

The stranger is a real process in its own session whose pid an adopted record points
at (what a reused pid looks like to the supervisor); our "instance" is a real process
carrying its launch token in its arguments, as ``koboldtui serve`` does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from koboldtui.config import new_launch_token
from koboldtui.control.process import pid_alive, still_ours, terminate_group
from koboldtui.control.children import Child

SLEEPER = "import time; time.sleep(120)"


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SLEEPER, *args], start_new_session=True)


def _adopted(pid: int, token: str, tmp_path: Path) -> Child:
    return Child(
        name="a", token=token, pid=pid, host="127.0.0.1", port=5123, log_path=tmp_path / "a.log",
        popen=None, api_key=None, health_path=None, progress_at=time.monotonic(),
    )


def test_a_reused_pid_is_neither_alive_nor_signalled(tmp_path: Path) -> None:
    token = new_launch_token()
    stranger = _spawn("--something-else")
    try:
        time.sleep(0.2)
        record = _adopted(stranger.pid, token, tmp_path)
        assert record.exit_code_now() is None  # our instance is gone, whoever has the pid now
        assert not still_ours(stranger.pid, token)
        assert terminate_group(stranger.pid, grace_s=1.0, token=token) == "gone"
        time.sleep(0.2)
        assert stranger.poll() is None and pid_alive(stranger.pid)  # untouched
    finally:
        stranger.kill()
        stranger.wait()


def test_our_own_adopted_instance_is_still_stopped(tmp_path: Path) -> None:
    token = new_launch_token()
    ours = _spawn("serve", "--launch-token", token)
    try:
        time.sleep(0.2)
        record = _adopted(ours.pid, token, tmp_path)
        assert record.exit_code_now() is False
        assert terminate_group(ours.pid, grace_s=5.0, token=token) == "term"
        assert ours.wait(timeout=5) is not None
    finally:
        ours.kill()
        ours.wait()

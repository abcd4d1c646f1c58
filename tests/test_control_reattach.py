"""Reattach only what is verifiably ours: a reused pid is never adopted, and stop reaches adopted children."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore, Launch

IGNORE_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


@pytest.fixture
def store(paths: AppPaths) -> InstanceStore:
    store = InstanceStore(open_database(paths.database))
    InstanceRegistry(store, paths).add(InstanceSpec(name="a", port=5801, gpus="cpu"))
    return store


def spawn(*args: str, script: str = "import time; time.sleep(120)") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script, *args], start_new_session=True)


def test_a_reused_pid_is_not_adopted_and_its_row_is_cleaned(
    paths: AppPaths, store: InstanceStore
) -> None:
    stranger = spawn("--launch-token", "someone-else")
    try:
        store.record_launch(
            Launch("a", stranger.pid, 5801, "our-token", time.time(), str(paths.log_dir / "a.log"))
        )
        sup = Supervisor(paths, store)
        assert sup.reattach() == []
        assert store.launch("a") is None
        snap = sup.snapshot("a")
        assert snap.state is InstanceState.FAILED and "pid reused" in snap.last_error
        assert pid_alive(stranger.pid)  # never signalled: it is not ours
    finally:
        stranger.kill()
        stranger.wait()


def test_a_child_still_starting_is_recognised_by_its_token_and_stop_escalates_to_sigkill(
    paths: AppPaths, store: InstanceStore
) -> None:
    child = spawn("--launch-token", "tok-123", script=IGNORE_TERM)
    try:
        time.sleep(0.2)  # let it install its SIGTERM handler
        store.record_launch(
            Launch("a", child.pid, 5801, "tok-123", time.time() - 5, str(paths.log_dir / "a.log"))
        )
        sup = Supervisor(paths, store)
        assert sup.reattach() == ["a"]
        snap = sup.snapshot("a")
        assert snap.state is InstanceState.STARTING and snap.pid == child.pid and snap.uptime_s >= 5
        began = time.monotonic()
        assert sup.stop("a", grace_s=0.5).state is InstanceState.STOPPED
        assert 0.5 <= time.monotonic() - began < 5
        assert child.wait(5) == -9  # it ignored SIGTERM, so the group got SIGKILL
        assert store.launch("a") is None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_two_starts_at_once_spawn_one_process(
    paths: AppPaths, store: InstanceStore, tmp_path: Path
) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    InstanceRegistry(store, paths).edit("a", {"model": str(model)})
    spawned: list[int] = []

    def build(argv: list[str]) -> list[str]:
        spawned.append(1)
        return [sys.executable, "-c", "import time; time.sleep(120)", *argv]

    sup = Supervisor(paths, store, command_builder=build)
    threads = [threading.Thread(target=sup.start, args=("a",)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    try:
        assert len(spawned) == 1
    finally:
        sup.stop_all(grace_s=2)

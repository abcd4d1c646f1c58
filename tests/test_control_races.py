"""Races between controllers (panel, ``koboldtui up``, CLI shells) and between threads of one.

Two ``Supervisor`` objects on one data folder stand for two processes: each has its own
SQLite connection and opens its own lock file description, so the ``flock`` excludes them
just as it excludes two processes. Children are stand-ins (hang or crash at once), and the
backoff runs on an injected clock, so nothing here waits for a real model.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from koboldtui.cli import main
from koboldtui.control.gpu_plan import default_gpu_planner
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.runstate import LaunchLockTimeout, RunState, RunStateFiles
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths, app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import (
    InstanceStore,
    Launch,
    LaunchConflictError,
    UnknownInstanceError,
)

MARK = f"kt-race-{uuid.uuid4().hex}"  # in every stand-in's argv, so strays can be found and killed
HANG = f"import time; time.sleep(60)  # {MARK}"
CRASH = f"import sys; print('CUDA error: out of memory', flush=True); sys.exit(3)  # {MARK}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.hook = None  # called once, on the next reading

    def __call__(self) -> float:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return self.now


class CountingBuilder:
    """A command builder for a stand-in script that counts the launches it prepared."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, argv: Sequence[str]) -> list[str]:
        with self._lock:
            self.calls += 1
        return [sys.executable, "-c", self.script, *argv]


def stray_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if MARK.encode() in raw and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_strays() -> Iterator[None]:
    yield
    for pid in stray_pids():  # an untracked child from a failing run: do not leak it
        try:
            os.killpg(pid, 9)
        except OSError:
            pass


@pytest.fixture
def paths() -> AppPaths:
    return app_paths().ensure()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


def open_store(paths: AppPaths) -> InstanceStore:
    return InstanceStore(open_database(paths.database))


def add(paths: AppPaths, model: Path, name: str, port: int, restart: str = "no") -> InstanceStore:
    store = open_store(paths)
    InstanceRegistry(store, paths).add(
        InstanceSpec(name=name, port=port, model=str(model), gpus="cpu", restart=restart)
    )
    return store


# -- Bug A: two controllers start the same instance ---------------------------------------


def test_two_controllers_starting_one_instance_at_once_spawn_one_child_and_both_track_it(
    paths: AppPaths, model: Path
) -> None:
    add(paths, model, "x", 5951)
    builder = CountingBuilder(HANG)
    # Hold each start in the planner (after "is there a launch row?") until the other one
    # arrives too: without a cross-process lock both then spawn a child.
    barrier = threading.Barrier(2)

    def make(store: InstanceStore) -> Supervisor:
        planner = default_gpu_planner(store)

        def waiting_planner(spec, model_path):  # type: ignore[no-untyped-def]
            try:
                barrier.wait(timeout=0.7)
            except threading.BrokenBarrierError:
                pass
            return planner(spec, model_path)

        return Supervisor(paths, store, gpu_planner=waiting_planner, command_builder=builder)

    panel, up = make(open_store(paths)), make(open_store(paths))
    errors: list[BaseException] = []

    def start(sup: Supervisor) -> None:
        try:
            sup.start("x")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in (panel, up)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    try:
        assert errors == []
        launch = open_store(paths).launch("x")
        assert launch is not None
        assert builder.calls == 1, "both controllers spawned a child"
        assert stray_pids() == [launch.pid]  # no untracked second child
        assert panel.snapshot("x").pid == launch.pid == up.snapshot("x").pid
        assert panel.is_running("x") and up.is_running("x")
    finally:
        panel.stop_all(grace_s=2)
        up.stop_all(grace_s=2)
    assert stray_pids() == []


def test_a_child_whose_launch_cannot_be_recorded_is_killed(
    paths: AppPaths, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = add(paths, model, "x", 5952)
    other = open_store(paths)  # the user removes the spec from another shell meanwhile
    seen: list[int] = []

    def builder(argv: Sequence[str]) -> list[str]:
        other.remove("x")
        return [sys.executable, "-c", HANG, *argv]

    for method in ("record_launch", "claim_launch"):
        original = getattr(store, method, None)
        if original is None:
            continue

        def spy(launch: Launch, _original=original) -> None:  # type: ignore[no-untyped-def]
            seen.append(launch.pid)
            _original(launch)

        monkeypatch.setattr(store, method, spy)
    sup = Supervisor(paths, store, command_builder=builder)
    with pytest.raises(UnknownInstanceError, match="no instance named 'x'"):
        sup.start("x")
    assert len(seen) == 1
    assert not pid_alive(seen[0]), "the spawned child was left running untracked"
    assert store.launches() == []


def test_claim_launch_never_overwrites_a_recorded_launch(paths: AppPaths, model: Path) -> None:
    store = add(paths, model, "x", 5953)
    first = Launch("x", 123, 5953, "tok1", 10.0, "/l/x.log")
    store.claim_launch(first)
    with pytest.raises(LaunchConflictError, match="pid 123") as caught:
        store.claim_launch(Launch("x", 456, 5953, "tok2", 11.0, "/l/x.log"))
    assert caught.value.existing == first
    assert store.launch("x") == first
    with pytest.raises(sqlite3.IntegrityError):
        store.claim_launch(Launch("ghost", 1, 1, "t", 1.0, "/l/g.log"))


def test_a_start_waits_for_the_launch_lock_another_controller_holds(
    paths: AppPaths, model: Path
) -> None:
    store = add(paths, model, "x", 5954)
    files = RunStateFiles(paths.data_dir / "run")
    sup = Supervisor(paths, store, command_builder=CountingBuilder(HANG))
    held, release = threading.Event(), threading.Event()

    def other_controller() -> None:
        with files.launch_lock("x"):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=other_controller)
    holder.start()
    assert held.wait(5)
    try:
        with pytest.raises(LaunchLockTimeout), files.launch_lock("x", timeout_s=0.1):
            pass  # a second description of the same file is refused while it is held
        threading.Timer(0.3, release.set).start()
        began = time.monotonic()
        sup.start("x")  # waits for the other controller, then starts
        assert time.monotonic() - began >= 0.25
        assert sup.is_running("x")
    finally:
        release.set()
        holder.join(5)
        sup.stop_all(grace_s=2)


# -- Bug B: a stop cancels a pending crash-restart ------------------------------------------


def crash_looping(
    paths: AppPaths, model: Path, clock: FakeClock
) -> tuple[Supervisor, CountingBuilder]:
    store = add(paths, model, "crashy", 5961, restart="on-failure")
    builder = CountingBuilder(CRASH)
    up = Supervisor(paths, store, clock=clock, command_builder=builder)
    up.supervise("crashy")
    for _ in range(500):
        if up.poll(["crashy"])[0].state is InstanceState.FAILED:
            break
        threading.Event().wait(0.01)
    snap = up.snapshot("crashy")
    assert snap.state is InstanceState.FAILED and snap.restart_in_s == 1
    return up, builder


def test_cli_stop_from_another_shell_cancels_a_pending_restart(
    paths: AppPaths, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    up, builder = crash_looping(paths, model, clock)
    assert main(["stop", "crashy"]) == 0
    out = capsys.readouterr().out
    assert "crashy was waiting to restart after a crash; it will stay stopped" in out
    clock.now += 10  # the backoff is long over
    snap = up.poll(["crashy"])[0]
    assert snap.state is InstanceState.STOPPED and snap.restart_in_s is None
    assert builder.calls == 1  # never restarted
    assert open_store(paths).launch("crashy") is None
    assert up.managed() == []
    # a second stop has nothing left to cancel
    assert main(["stop", "crashy"]) == 0
    assert "crashy is not running" in capsys.readouterr().out


def test_a_stop_marked_before_the_crash_does_not_prevent_the_restart(
    paths: AppPaths, model: Path
) -> None:
    clock = FakeClock()
    store = add(paths, model, "crashy", 5962, restart="on-failure")
    Supervisor(paths, open_store(paths)).stop("crashy")  # an old stop: before the crash
    builder = CountingBuilder(CRASH)
    up = Supervisor(paths, store, clock=clock, command_builder=builder)
    up.supervise("crashy")
    for _ in range(500):
        if up.poll(["crashy"])[0].state is InstanceState.FAILED:
            break
        threading.Event().wait(0.01)
    clock.now += 1.01
    up.poll(["crashy"])
    assert builder.calls == 2  # restarted as the policy says
    up.stop_all(grace_s=2)


def test_a_stop_between_the_restart_check_and_the_start_wins(paths: AppPaths, model: Path) -> None:
    clock = FakeClock()
    up, builder = crash_looping(paths, model, clock)
    clock.now += 1.01  # the restart is due
    # The panel's stop lands right after the poll found the restart due (the first clock
    # reading of that step), before the restart starts anything.
    clock.hook = lambda: up.stop("crashy")
    snap = up.poll(["crashy"])[0]
    assert snap.state is InstanceState.STOPPED
    assert builder.calls == 1
    assert open_store(paths).launch("crashy") is None


# -- run-state files written by two threads at once ----------------------------------------


def test_two_threads_writing_one_runstate_file_both_land(
    paths: AppPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = RunStateFiles(paths.data_dir / "run")
    real_replace = os.replace
    barrier = threading.Barrier(2)
    sources: list[str] = []
    failures: list[BaseException] = []

    def replace(src, dst):  # type: ignore[no-untyped-def]
        sources.append(str(src))
        try:
            barrier.wait(timeout=0.7)  # both have written their temp file before either moves it
        except threading.BrokenBarrierError:
            pass
        try:
            real_replace(src, dst)
        except OSError as exc:
            failures.append(exc)
            raise

    monkeypatch.setattr(os, "replace", replace)
    threads = [
        threading.Thread(target=files.write, args=("x", RunState(state=s, restarts=i)))
        for i, s in enumerate(("failed", "stopped"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    monkeypatch.undo()
    assert failures == [], "one thread's update was lost"
    assert len(set(sources)) == 2
    assert files.read("x").state in ("failed", "stopped")
    assert [p.name for p in files.folder.iterdir() if p.name.endswith(".tmp")] == []

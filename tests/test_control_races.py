"""Races between controllers (panel, ``koboldtui up``, CLI shells) and between threads of one.

Two ``Supervisor`` objects on one data folder stand for two processes: each has its own
SQLite connection and its own controller name in the run record, so the ``BEGIN IMMEDIATE``
transitions exclude them just as they exclude two processes. Children are stand-ins (hang or crash at once), and the
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
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.instances import (
    InstanceStore,
    Launch,
    LaunchConflictError,
    UnknownInstanceError,
)
from koboldtui.store.runs import RunStore

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


def test_a_child_whose_launch_cannot_be_recorded_is_killed(paths: AppPaths, model: Path) -> None:
    store = add(paths, model, "x", 5952)
    other = open_store(paths)  # the user removes the spec from another shell meanwhile
    built: list[int] = []

    def builder(argv: Sequence[str]) -> list[str]:
        other.remove("x")
        built.append(1)
        return [sys.executable, "-c", HANG, *argv]

    sup = Supervisor(paths, store, command_builder=builder)
    with pytest.raises(UnknownInstanceError, match="no instance named 'x'"):
        sup.start("x")
    assert built == [1]  # a child was spawned ...
    assert stray_pids() == [], "the spawned child was left running untracked"  # ... and killed
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


def test_a_start_waits_while_another_controller_prepares_the_same_launch(
    paths: AppPaths, model: Path
) -> None:
    add(paths, model, "x", 5954)
    builder = CountingBuilder(HANG)
    release = threading.Event()
    planner = default_gpu_planner(open_store(paths))

    def slow_planner(spec, model_path):  # type: ignore[no-untyped-def]
        release.wait(5)  # the other controller holds its reservation (state starting, no pid)
        return planner(spec, model_path)

    other = Supervisor(paths, open_store(paths), gpu_planner=slow_planner, command_builder=builder)
    sup = Supervisor(paths, open_store(paths), command_builder=builder)
    holder = threading.Thread(target=other.start, args=("x",))
    holder.start()
    try:
        deadline = time.monotonic() + 5
        while open_store(paths).conn.execute("SELECT state FROM runs WHERE name = 'x'").fetchone() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        threading.Timer(0.3, release.set).start()
        began = time.monotonic()
        snap = sup.start("x")  # waits for the other controller's launch, then adopts it
        assert time.monotonic() - began >= 0.25
        assert builder.calls == 1 and snap.pid == open_store(paths).launch("x").pid
        assert sup.is_running("x")
    finally:
        release.set()
        holder.join(5)
        sup.stop_all(grace_s=2)
        other.stop_all(grace_s=2)
    assert stray_pids() == []


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


# -- one run record changed by many threads on two connections at once ----------------------


def test_concurrent_changes_of_one_run_record_all_land(paths: AppPaths, model: Path) -> None:
    add(paths, model, "x", 5963)
    stores = [RunStore(open_store(paths).conn), RunStore(open_store(paths).conn)]
    errors: list[BaseException] = []

    def bump(runs: RunStore) -> None:
        try:
            for _ in range(50):
                runs.change("x", lambda old: old.__class__(**{**old.__dict__, "restarts": old.restarts + 1}))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(stores[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert stores[0].get("x").restarts == 200, "a read-modify-write lost another's update"

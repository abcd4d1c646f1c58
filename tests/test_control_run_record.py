"""The one run record: a stop beats an exit, each controller stops only what it started,
failures before launch are kept like crashes, remote instances never make anyone wait,
and the records of an older version are taken over on upgrade.

Children are stand-ins (a Python one-liner carrying the launch token in its arguments);
two ``Supervisor`` objects on one data folder stand for two controllers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from koboldtui.cli import main
from koboldtui.control.foreground import run_foreground
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState, StartError
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths, app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore

MARK = f"kt-runrec-{uuid.uuid4().hex}"
HANG = f"import time; time.sleep(60)  # {MARK}"
# exits with 1 on SIGTERM: to the watcher, an exit that looks like a crash, racing the stop
TERM_CRASH = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))\n"
    f"time.sleep(60)  # {MARK}"
)


def strays() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARK.encode() in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(autouse=True)
def no_strays() -> Iterator[None]:
    yield
    for pid in strays():
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_store(paths: AppPaths) -> InstanceStore:
    return InstanceStore(open_database(paths.database))


def builder(script: str, calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    def build(argv: Sequence[str]) -> list[str]:
        if calls is not None:
            calls.append(1)
        return [sys.executable, "-c", script, *argv]

    return build


def add(paths: AppPaths, model: Path, name: str, port: int, **fields) -> None:  # type: ignore[no-untyped-def]
    InstanceRegistry(open_store(paths), paths).add(
        InstanceSpec(name=name, port=port, model=str(model), gpus="cpu", **fields)
    )


def test_an_exit_that_races_a_stop_is_a_stop_and_never_restarts(paths: AppPaths, model: Path) -> None:
    add(paths, model, "crashy", 5971, restart="on-failure")
    calls: list[int] = []
    clock = FakeClock()
    up = Supervisor(paths, open_store(paths), clock=clock, command_builder=builder(TERM_CRASH, calls))
    panel = Supervisor(paths, open_store(paths))
    up.supervise("crashy")
    pid = up.snapshot("crashy").pid
    assert pid is not None
    stopping = threading.Thread(target=panel.stop, args=("crashy",), kwargs={"grace_s": 5})
    stopping.start()
    while stopping.is_alive():  # `up` watches the exit (code 1) while the panel stops it
        snap = up.poll(["crashy"])[0]
        assert snap.state is not InstanceState.FAILED, snap.last_error
        time.sleep(0.005)
    stopping.join()
    clock.now += 1000  # any backoff long over
    for sup in (up, panel):
        snap = sup.poll(["crashy"])[0]
        assert snap.state is InstanceState.STOPPED and snap.restart_in_s is None
    assert calls == [1] and not pid_alive(pid) and strays() == []
    assert up.managed() == [] and open_store(paths).launch("crashy") is None


def test_a_stop_after_the_exit_was_recorded_cancels_the_restart_without_an_error(
    paths: AppPaths, model: Path
) -> None:
    add(paths, model, "crashy", 5972, restart="on-failure")
    clock = FakeClock()
    up = Supervisor(paths, open_store(paths), clock=clock, command_builder=builder(HANG))
    up.supervise("crashy")
    os.kill(up.snapshot("crashy").pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while up.poll(["crashy"])[0].state is not InstanceState.FAILED:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    report = Supervisor(paths, open_store(paths)).stop_report("crashy")  # no pid: no TypeError
    assert report.stopped_pid is None and report.cancelled_restart
    clock.now += 1000
    assert up.poll(["crashy"])[0].state is InstanceState.STOPPED and strays() == []


def test_up_stops_only_what_it_started(paths: AppPaths, model: Path) -> None:
    add(paths, model, "mine", 5973)
    add(paths, model, "theirs", 5974)
    panel = Supervisor(paths, open_store(paths), command_builder=builder(HANG))
    panel.start("theirs")
    theirs = panel.snapshot("theirs")
    assert theirs.started_by == "user"
    up = Supervisor(paths, open_store(paths), command_builder=builder(HANG))
    stop = threading.Event()
    said: list[str] = []
    loop = threading.Thread(
        target=run_foreground, args=(up, ["mine"]), kwargs={"stop_event": stop, "interval_s": 0.05, "say": said.append}
    )
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while up.snapshot("mine").pid is None or "theirs" not in up.managed():
            assert time.monotonic() < deadline, said
            time.sleep(0.02)
        mine = up.snapshot("mine")
        assert mine.started_by == "up"
    finally:
        stop.set()
        loop.join(30)
    assert not pid_alive(mine.pid) and panel.snapshot("mine").state is InstanceState.STOPPED
    assert pid_alive(theirs.pid), "`up` stopped an instance it only adopted"
    assert panel.snapshot("theirs").state in (InstanceState.STARTING, InstanceState.READY)
    panel.stop_all(grace_s=2)
    assert strays() == []


def test_stop_all_by_started_by_stops_only_those_and_a_stop_clears_the_word(
    paths: AppPaths, model: Path
) -> None:
    add(paths, model, "g", 5975)
    add(paths, model, "u", 5976)
    gateway = Supervisor(paths, open_store(paths), command_builder=builder(HANG))
    gateway.start("g", started_by="gateway")
    gateway.start("u")  # a person's start through the same process
    assert [s.name for s in gateway.stop_all(started_by="gateway")] == ["g"]
    assert gateway.snapshot("u").pid is not None and gateway.snapshot("g").started_by is None
    gateway.stop("u")
    assert gateway.snapshot("u").started_by is None and strays() == []


def test_failures_before_launch_are_kept_until_dismissed_or_started_again(
    paths: AppPaths, model: Path
) -> None:
    add(paths, model, "gone", 5977)
    model.unlink()  # the model was deleted after the instance was saved
    InstanceRegistry(open_store(paths), paths).add(
        InstanceSpec(name="ghost", port=5978, kind="command", gpus="cpu",
                     command="/nonexistent/kt-server --port {port}")
    )
    sup = Supervisor(paths, open_store(paths))
    for name, words in (("gone", "m.gguf"), ("ghost", "was not found")):
        with pytest.raises(StartError, match=words):
            sup.start(name)
        for reader in (sup, Supervisor(paths, open_store(paths))):  # any controller sees it
            snap = reader.snapshot(name)
            assert snap.state is InstanceState.FAILED and words in snap.last_error
            assert snap.pid is None and snap.restart_in_s is None
    assert sup.dismiss("gone").state is InstanceState.STOPPED
    assert sup.snapshot("gone").last_error is None
    assert sup.dismiss("gone").state is InstanceState.STOPPED  # nothing to dismiss: no change
    # starting again replaces the old error with the new attempt's own
    with pytest.raises(StartError):
        sup.start("ghost")
    assert sup.snapshot("ghost").state is InstanceState.FAILED
    assert json.loads(_ps_json())["ghost"]["state"] == "failed"


def _ps_json() -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ps", "--json"]) == 0
    return json.dumps({row["name"]: row for row in json.loads(out.getvalue())})


def test_ps_with_five_silent_remote_instances_answers_at_once(paths: AppPaths) -> None:
    silent = []
    registry = InstanceRegistry(open_store(paths), paths)
    for i in range(5):  # accept connections, never answer: each look waits its full timeout
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        silent.append(sock)
        port = sock.getsockname()[1]
        registry.add(InstanceSpec(name=f"far{i}", port=port, kind="remote", url=f"http://127.0.0.1:{port}"))
    try:
        main(["ps"])  # warm the imports
        times = []
        for _ in range(3):
            began = time.perf_counter()
            assert main(["ps", "--json"]) == 0
            times.append(time.perf_counter() - began)
        assert min(times) < 0.3, times
        sup = Supervisor(paths, open_store(paths))
        began = time.perf_counter()
        snaps = sup.poll()  # the panel's poll: never waits on the network either
        assert time.perf_counter() - began < 0.3
        assert {s.state for s in snaps} == {InstanceState.UNREACHABLE}
        rows = json.loads(_ps_json())
        assert all(row["state"] == "unreachable" and "look_age_s" in row for row in rows.values())
    finally:
        for sock in silent:
            sock.close()


def test_an_instance_running_during_the_upgrade_is_still_adopted(tmp_path: Path, model: Path) -> None:
    import sqlite3

    from koboldtui.store.db import MIGRATIONS, statements

    home = Path(os.environ["KOBOLDTUI_HOME"])
    paths = app_paths().ensure()
    db = sqlite3.connect(paths.database, isolation_level=None)  # a version-2 database
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL)")
    for version in (1, 2):
        for statement in statements(MIGRATIONS[version - 1]):
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (?, 0)", (version,))
    spec = InstanceSpec(name="old", port=5979, model=str(model), gpus="cpu", restart="on-failure")
    db.execute("INSERT INTO instances (name, spec, created_at, updated_at) VALUES (?, ?, 0, 0)",
               ("old", json.dumps(spec.to_dict())))
    spec2 = InstanceSpec(name="crashed", port=5980, model=str(model), gpus="cpu")
    db.execute("INSERT INTO instances (name, spec, created_at, updated_at) VALUES (?, ?, 0, 0)",
               ("crashed", json.dumps(spec2.to_dict())))
    token = uuid.uuid4().hex
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", HANG, "--launch-token", token], start_new_session=True)
    db.execute("INSERT INTO launches VALUES ('old', ?, 5979, ?, 1.0, '/dev/null')", (child.pid, token))
    db.close()
    run = home / "data" / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "crashed.json").write_text(json.dumps(  # what the old RunStateFiles wrote
        {"state": "failed", "restarts": 2, "last_error": "exited with code 3", "token": None,
         "supervisor_pid": 1, "updated_at": 1.0, "restart_pending": False, "stopped_by_user_at": None}))
    (run / "crashed.lock").write_text("")
    journal = run / "old.horde-jobs.json"  # a Horde worker's job journal: not ours to fold
    journal.write_text(json.dumps({"jobs": []}))
    try:
        sup = Supervisor(paths, open_store(paths))
        assert sup.reattach() == ["old"]
        assert sup.snapshot("old").pid == child.pid and sup.is_running("old")
        crashed = sup.snapshot("crashed")
        assert crashed.state is InstanceState.FAILED and crashed.restarts == 2
        assert crashed.last_error == "exited with code 3"
        assert list(run.iterdir()) == [journal]  # the old files are folded in, once
        sup.stop("old", grace_s=2)
        assert child.wait(5) is not None
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_start_during_a_stop_waits_for_it_then_starts_afresh(paths: AppPaths, model: Path) -> None:
    slow_stop = (  # drains for 0.5 s after SIGTERM, like a server finishing its requests
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.5), sys.exit(0)))\n"
        f"time.sleep(60)  # {MARK}"
    )
    add(paths, model, "x", 5981)
    panel = Supervisor(paths, open_store(paths), command_builder=builder(slow_stop))
    shell = Supervisor(paths, open_store(paths), command_builder=builder(slow_stop))
    panel.start("x")
    first = panel.snapshot("x").pid
    time.sleep(0.3)  # the stand-in has its SIGTERM handler
    stopping = threading.Thread(target=panel.stop, args=("x",))
    stopping.start()
    deadline = time.monotonic() + 5
    while shell.snapshot("x").state is not InstanceState.STOPPING:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    snap = shell.start("x")  # not "adopted" by a process about to go: a new one after it
    stopping.join(10)
    assert not pid_alive(first)
    assert snap.pid not in (None, first) and pid_alive(snap.pid)
    assert panel.snapshot("x").state is InstanceState.STARTING and panel.snapshot("x").pid == snap.pid
    shell.stop_all(grace_s=2)
    assert strays() == []

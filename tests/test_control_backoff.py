"""The supervisor's state machine with an injected clock: crash → failed → restart after min(2^n, 300) s.

The children here are real processes that stand in for a model server (crash at once,
hang silently, or report a failed load over HTTP), so the restart, stall and failure paths
run in milliseconds without sleeping through the backoff.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from koboldtui.control.backoff import Backoff
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore

CRASH = (
    "import sys; print('loading...'); print('CUDA error: out of memory', flush=True); sys.exit(3)"
)
HANG = "import time; time.sleep(120)"
FAILED_LOAD = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port = int(sys.argv[sys.argv.index('--port') + 1])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({'status': 'failed', 'error': 'tensor blk.0 has a bad shape'}).encode()
        self.send_response(503); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(('127.0.0.1', port), H).serve_forever()
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stand_in(script: str):
    def build(argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", script, *argv]

    return build


@pytest.fixture
def store(paths: AppPaths, tmp_path: Path) -> InstanceStore:
    store = InstanceStore(open_database(paths.database))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    registry = InstanceRegistry(store, paths)
    registry.add(
        InstanceSpec(name="crashy", port=5901, model=str(model), gpus="cpu", restart="on-failure")
    )
    registry.add(InstanceSpec(name="once", port=5902, model=str(model), gpus="cpu", restart="no"))
    return store


def wait_state(sup: Supervisor, name: str, state: InstanceState, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sup.poll([name])[0].state is not state:
        assert time.monotonic() < deadline, f"{name} never became {state}: {sup.snapshot(name)}"
        time.sleep(0.02)


def test_backoff_doubles_up_to_five_minutes() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 12)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff.delay(1000) == 300
    assert backoff.streak_after_exit(5, uptime_s=10) == 6  # still crash-looping
    assert backoff.streak_after_exit(5, uptime_s=600) == 1  # ran a long while: start over


def test_a_crashing_instance_is_restarted_with_growing_delays(
    paths: AppPaths, store: InstanceStore
) -> None:
    clock = FakeClock()
    sup = Supervisor(paths, store, clock=clock, command_builder=stand_in(CRASH))
    sup.start("crashy")
    pids = [store.launch("crashy").pid]
    for expected_delay, restarts in ((1, 0), (2, 1), (4, 2)):
        wait_state(sup, "crashy", InstanceState.FAILED)
        snap = sup.snapshot("crashy")
        assert snap.restarts == restarts
        assert f"exited with code 3; restarting in {expected_delay} s" in snap.last_error
        assert "CUDA error: out of memory" in snap.last_error  # the log tail says why
        assert snap.restart_in_s == expected_delay
        clock.now += expected_delay - 0.01
        assert sup.poll(["crashy"])[0].state is InstanceState.FAILED  # not yet
        clock.now += 0.02
        snap = sup.poll(["crashy"])[0]
        assert snap.state in (InstanceState.STARTING, InstanceState.FAILED)
        pids.append(store.launch("crashy").pid if store.launch("crashy") else snap.pid)
    assert sup.snapshot("crashy").restarts == 3
    assert len(set(pids)) == len(pids)  # every restart is a new process
    sup.stop("crashy")  # cancels what was scheduled
    snap = sup.snapshot("crashy")
    assert snap.state is InstanceState.STOPPED and snap.restart_in_s is None
    clock.now += 1000
    assert sup.poll(["crashy"])[0].state is InstanceState.STOPPED


def test_policy_no_leaves_a_crash_failed_with_its_exit_code(
    paths: AppPaths, store: InstanceStore
) -> None:
    clock = FakeClock()
    sup = Supervisor(paths, store, clock=clock, command_builder=stand_in(CRASH))
    sup.start("once")
    wait_state(sup, "once", InstanceState.FAILED)
    clock.now += 10_000
    snap = sup.poll(["once"])[0]
    assert snap.state is InstanceState.FAILED and snap.restarts == 0 and snap.restart_in_s is None
    assert snap.last_error.startswith("exited with code 3\nlast log lines:")
    assert store.launch("once") is None
    # another controller (e.g. `koboldtui ps`) sees the same failure
    other = Supervisor(paths, store)
    assert other.snapshot("once").state is InstanceState.FAILED
    assert other.snapshot("once").last_error == snap.last_error


def test_a_silent_hang_while_starting_is_killed_after_the_stall_timeout(
    paths: AppPaths, store: InstanceStore
) -> None:
    clock = FakeClock()
    sup = Supervisor(paths, store, clock=clock, stall_timeout_s=30, command_builder=stand_in(HANG))
    sup.start("once")
    pid = store.launch("once").pid
    assert sup.poll(["once"])[0].state is InstanceState.STARTING
    clock.now += 29
    assert sup.poll(["once"])[0].state is InstanceState.STARTING
    clock.now += 2
    snap = sup.poll(["once"])[0]
    assert snap.state is InstanceState.FAILED
    assert "no progress for 30 s while starting" in snap.last_error
    assert not pid_alive(pid)


def test_a_failed_model_load_is_reported_from_health(paths: AppPaths, store: InstanceStore) -> None:
    sup = Supervisor(paths, store, command_builder=stand_in(FAILED_LOAD))
    sup.start("once")
    pid = store.launch("once").pid
    wait_state(sup, "once", InstanceState.FAILED)
    snap = sup.snapshot("once")
    assert snap.last_error.startswith("the model failed to load: tensor blk.0 has a bad shape")
    assert not pid_alive(pid)


def test_wait_ready_raises_with_the_reason(paths: AppPaths, store: InstanceStore) -> None:
    from koboldtui.control.state import StartError

    sup = Supervisor(paths, store, command_builder=stand_in(CRASH))
    with pytest.raises(StartError, match="'once' did not become ready: exited with code 3"):
        sup.start("once", wait=True, timeout_s=30)

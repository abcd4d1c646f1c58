"""The hang watchdog: a ready instance whose /health goes silent is killed and handled as a crash.

The child is a stand-in for a model server: it answers ``/health`` at once (no model) until a
marker file appears, then either hangs inside its HTTP handler while the process stays alive,
or keeps answering 503 "stopping". Time runs on an injected clock, so the 10 s probe interval
and the 90 s hang timeout pass without sleeping; only the probes of the hung child wait (for
a short probe timeout).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from koboldtui.control import kinds as kinds_module  # where a serve instance is probed
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore

# answers {"status": "ok"} until MARKER exists; then AFTER decides: hang, 503 stopping, or ok still
SERVER = """
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
port = int(sys.argv[sys.argv.index('--port') + 1])
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code, body = 200, {'status': 'ok'}
        if os.path.exists(MARKER):
            if AFTER == 'hang':
                time.sleep(3600)  # the process lives on; /health never answers again
            if AFTER == 'stopping':
                code, body = 503, {'status': 'stopping'}
        data = json.dumps(body).encode()
        self.send_response(code); self.send_header('Content-Length', str(len(data)))
        self.end_headers(); self.wfile.write(data)
    def log_message(self, *a): pass
print('serving', flush=True)
HTTPServer(('127.0.0.1', port), H).serve_forever()
"""

REASON = "stopped answering /health for 90 s; it was killed"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Probes:
    """Counts the watchdog's /health looks (the supervisor's probe, wrapped)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = kinds_module.probe_health_detail

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(kinds_module, "probe_health_detail", counted)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def store(paths: AppPaths, tmp_path: Path) -> InstanceStore:
    store = InstanceStore(open_database(paths.database))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    registry = InstanceRegistry(store, paths)
    for name, restart in (("retry", "on-failure"), ("once", "no")):
        registry.add(
            InstanceSpec(name=name, port=free_port(), model=str(model), gpus="cpu", restart=restart)
        )
    return store


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for sup in made:  # never leak a stand-in (a hung one included)
        sup.stop_all(grace_s=2.0)


def make(
    supervisors: list[Supervisor],
    paths: AppPaths,
    store: InstanceStore,
    clock: FakeClock,
    marker: Path,
    after: str,
) -> Supervisor:
    script = f"MARKER = {str(marker)!r}; AFTER = {after!r}\n" + SERVER

    def build(argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", script, *argv]

    sup = Supervisor(
        paths,
        store,
        clock=clock,
        command_builder=build,
        health_timeout_s=0.3,  # each look at the hung child waits this long (real time)
    )
    supervisors.append(sup)
    return sup


def wait_state(sup: Supervisor, name: str, state: InstanceState, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sup.poll([name])[0].state is not state:
        assert time.monotonic() < deadline, f"{name} never became {state}: {sup.snapshot(name)}"
        time.sleep(0.02)


@pytest.mark.parametrize("name", ["retry", "once"])
def test_a_ready_instance_that_stops_answering_health_is_killed(
    name: str,
    paths: AppPaths,
    store: InstanceStore,
    tmp_path: Path,
    supervisors: list[Supervisor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, marker = FakeClock(), tmp_path / "hang-now"
    sup = make(supervisors, paths, store, clock, marker, "hang")
    assert (sup.health_interval_s, sup.hang_timeout_s) == (10.0, 90.0)  # the defaults
    sup.start(name)
    wait_state(sup, name, InstanceState.READY)
    pid = sup.snapshot(name).pid
    probes = Probes(monkeypatch)  # counts the looks at a ready instance only
    clock.now += 9.9
    assert sup.poll([name])[0].state is InstanceState.READY
    assert probes.count == 0  # becoming ready is the first answer: no look within 10 s
    clock.now += 0.1
    assert sup.poll([name])[0].state is InstanceState.READY
    assert probes.count == 1  # answered "ok" at 1010

    marker.touch()  # from now on /health hangs; the process stays alive
    clock.now += 9.9
    assert sup.poll([name])[0].state is InstanceState.READY
    assert probes.count == 1  # the interval has not elapsed: no look
    clock.now += 0.1
    assert sup.poll([name])[0].state is InstanceState.READY  # silent for 10 s
    assert probes.count == 2
    clock.now = 1010 + 89
    snap = sup.poll([name])[0]
    assert snap.state is InstanceState.READY and snap.pid == pid  # silent 89 s: not yet
    assert pid_alive(pid)
    assert probes.count == 3

    clock.now += 10  # silent 99 s at this look
    snap = sup.poll([name])[0]
    assert probes.count == 4
    assert snap.state is InstanceState.FAILED
    assert not pid_alive(pid)
    assert snap.last_error.startswith(REASON)
    assert store.launch(name) is None
    if name == "once":  # restart: no → it stays failed
        assert snap.restart_in_s is None and snap.last_error.startswith(REASON + "\n")
        clock.now += 1000
        assert sup.poll([name])[0].state is InstanceState.FAILED
        return
    # restart: on-failure → the usual backoff restart
    assert snap.last_error.startswith(REASON + "; restarting in 1 s")
    assert snap.restart_in_s == 1
    marker.unlink()  # the next process answers again
    clock.now += 1
    wait_state(sup, name, InstanceState.READY)
    snap = sup.snapshot(name)
    assert snap.restarts == 1 and snap.pid not in (None, pid)


@pytest.mark.parametrize("after", ["ok", "stopping"])
def test_an_instance_that_keeps_answering_is_never_killed(
    after: str,
    paths: AppPaths,
    store: InstanceStore,
    tmp_path: Path,
    supervisors: list[Supervisor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock, marker = FakeClock(), tmp_path / "switch"
    sup = make(supervisors, paths, store, clock, marker, after)
    sup.start("once")
    wait_state(sup, "once", InstanceState.READY)
    pid = sup.snapshot("once").pid
    probes = Probes(monkeypatch)
    marker.touch()  # "stopping": 503 answers still count as answering
    for step in range(1, 41):  # 400 s, far past the hang timeout
        clock.now += 5
        snap = sup.poll(["once"])[0]
        assert snap.state is InstanceState.READY and snap.pid == pid
        assert probes.count == step // 2  # one look per 10 s, not one per poll
    assert pid_alive(pid)
    if after != "ok":
        return
    # a fresh controller (`koboldtui ps`) adopts it and does not look at /health on its first poll
    other = Supervisor(paths, store, clock=clock)
    supervisors.append(other)
    before = probes.count
    assert {s.name: s.state for s in other.poll()}["once"] is InstanceState.READY
    assert probes.count == before

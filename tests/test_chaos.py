"""Bounded chaos: kill -9 and SIGSTOP an instance under local load while the fake Horde serves jobs.

Real processes on 127.0.0.1: the supervisor runs ``koboldtui serve`` with the bundled model
and a Horde worker (local-priority window 0, so Horde jobs run alongside local load).
What must hold: every local request is answered (200) or fails cleanly (503, or a closed
connection while its process died) — never a 500; every Horde job handed out is submitted
``ok`` or ``faulted`` (a killed process's jobs are handed back by its successor from the
job journal); the instance comes back after each fault.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fake_horde import FakeHorde, job_reply

from koboldtui.config import HordeSettings
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore
from tests.instance_harness import free_port

pytestmark = pytest.mark.slow


def _wait(predicate, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    deadline = t0 + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    print(f"{what}: {time.monotonic() - t0:.1f} s")


def test_kill_9_and_sigstop_under_load_lose_nothing(bundled_model: Path, horde: FakeHorde) -> None:
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    port = free_port()
    InstanceRegistry(store, paths).add(
        InstanceSpec(name="chaos", port=port, gpus="cpu", ctx=256, parallel=3, restart="on-failure",
                     horde=HordeSettings(enabled=True, worker_name="chaos-worker", url=horde.url,
                                         window_s=0.0, threads=1, max_length=16)),
        horde_key="good-key",
    )
    horde.pop_script += [job_reply(prompt=f"Job {i}:", max_length=8, ttl=120) for i in range(5)]
    sup = Supervisor(paths, store, health_interval_s=0.5, hang_timeout_s=3.0, health_timeout_s=0.5)
    base = f"http://127.0.0.1:{port}"
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 8})
                    outcomes[str(r.status_code)] += 1
                    if r.status_code == 503:
                        time.sleep(0.2)  # loading after a restart: do not spin
                    if r.status_code == 200:
                        assert r.json()["results"][0]["finish_reason"] in ("length", "stop", "abort")
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError,
                        httpx.ReadTimeout):
                    outcomes["connection closed"] += 1
                    time.sleep(0.2)

    journal = paths.data_dir / "run" / "chaos.horde-jobs.json"

    def job_in_hand() -> bool:
        """The worker holds a job (recorded in its journal), not merely one on its way to it."""
        try:
            held = set(json.loads(journal.read_text()))
        except (OSError, ValueError):
            return False
        return bool(held & set(horde.jobs))

    def ready_pid(other_than: int | None) -> int | None:
        snap = sup.poll(["chaos"])[0]
        return snap.pid if snap.state is InstanceState.READY and snap.pid != other_than else None

    sup.start("chaos", wait=True, timeout_s=120)
    loaders = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for thread in loaders:
        thread.start()
    try:
        _wait(lambda: outcomes["200"] >= 2, 60, "local requests answered")
        _wait(job_in_hand, 60, "a Horde job in hand")
        first = sup.snapshot("chaos").pid
        os.kill(first, signal.SIGKILL)  # kill -9 with a Horde job in hand
        _wait(lambda: ready_pid(first), 90, "the restart after kill -9")
        second = sup.snapshot("chaos").pid
        served = outcomes["200"]
        _wait(lambda: outcomes["200"] >= served + 1, 60, "local requests answered after kill -9")
        _wait(job_in_hand, 60, "a Horde job in hand again")
        os.kill(second, signal.SIGSTOP)  # frozen: the watchdog must kill it
        _wait(lambda: ready_pid(second), 120, "the restart after SIGSTOP")
        served = outcomes["200"]
        _wait(lambda: outcomes["200"] >= served + 1, 60, "local requests answered after SIGSTOP")
        stop.set()  # local load holds the Horde's door shut; let the last jobs through
        for thread in loaders:
            thread.join(timeout=60)
        try:
            _wait(lambda: not horde.pop_script and not horde.jobs, 90, "every Horde job submitted")
        except AssertionError:
            log = next(paths.log_dir.glob("chaos*.log")).read_text()[-6000:]
            raise AssertionError(f"left: {list(horde.jobs)} script {len(horde.pop_script)} "
                                 f"submitted {len(horde.submitted)}\n{log}") from None
    finally:
        stop.set()
        for thread in loaders:
            thread.join(timeout=60)
        sup.stop_all()
    submitted = Counter(body["state"] for body in horde.submitted.values())
    print(f"local requests: {dict(outcomes)}; Horde jobs submitted: {dict(submitted)}; "
          f"restarts: {sup.snapshot('chaos').restarts}")
    assert len(horde.submitted) == 5 and set(submitted) <= {"ok", "faulted"}
    logs = "".join(p.read_text(errors="replace") for p in paths.log_dir.glob("chaos*.log*"))
    # kill -9 left a job in hand: the successor handed it back (after SIGSTOP, the SIGCONT
    # that follows SIGTERM lets the frozen process drain and submit its job itself)
    assert logs.count("handing back") >= 1
    assert outcomes["200"] > 0 and set(outcomes) <= {"200", "503", "connection closed"}, outcomes

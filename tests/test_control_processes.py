"""Real instance processes on CPU with the bundled model: start, answer, stop, survive, restart, reattach.

Each test launches ``koboldtui serve`` children (about 1-3 s each to load the 250 MB model)
through the supervisor or the ``koboldtui`` CLI, exactly as a user would; launches are
kept few so the suite stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from fake_nvml import FakeGpu, FakeNvml, GiB
from instance_harness import free_port, wait_for

from koboldtui.control.gpu_plan import default_gpu_planner
from koboldtui.control.ports import port_is_free
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.gpu.nvml import NvmlSession
from koboldtui.paths import AppPaths, app_paths
from koboldtui.store.db import open_database
from koboldtui.store.gpus import reconcile, set_order
from koboldtui.store.instances import InstanceStore

pytestmark = pytest.mark.slow

SMALL = {"ctx": 512, "parallel": 2, "batch_size": 128, "threads": 1}
REPO = Path(__file__).resolve().parent.parent




@pytest.fixture
def paths(bundled_model: Path) -> AppPaths:
    return app_paths().ensure()


@pytest.fixture
def store(paths: AppPaths) -> InstanceStore:
    return InstanceStore(open_database(paths.database))


def cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "koboldtui.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=dict(os.environ),
        check=False,
    )


def generate(port: int, prompt: str) -> str:
    response = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/generate",
        timeout=120,
        json={"prompt": prompt, "max_length": 8, "temperature": 0.1},
    )
    response.raise_for_status()
    return response.json()["results"][0]["text"]


def status(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/api/koboldtui/status", timeout=5).json()


def test_two_instances_answer_at_once_with_the_gpu_env_of_their_spec_and_stop_frees_the_port(
    paths: AppPaths, store: InstanceStore
) -> None:
    # Two GPUs NVML sees (faked: this machine has none); the user put GPU 1 first.
    fake = FakeNvml(
        [
            FakeGpu("GPU-aaaa-0", "Fake A", 24 * GiB, pci_bus_id="00000000:01:00.0"),
            FakeGpu("GPU-bbbb-1", "Fake B", 24 * GiB, pci_bus_id="00000000:02:00.0"),
        ]
    )
    reconcile(store.conn, [("GPU-aaaa-0", "Fake A"), ("GPU-bbbb-1", "Fake B")])
    set_order(store.conn, ["GPU-bbbb-1", "GPU-aaaa-0"])
    registry = InstanceRegistry(store, paths)
    p1, p2 = free_port(), free_port()
    registry.add(InstanceSpec(name="gpu", port=p1, gpus="auto", **SMALL))
    registry.add(InstanceSpec(name="cpu", port=p2, gpus="cpu", **SMALL))
    planner = default_gpu_planner(store, inventory_reader=NvmlSession(lambda: fake).read)
    supervisor = Supervisor(paths, store, gpu_planner=planner)
    try:
        supervisor.start("gpu")
        supervisor.start("cpu")  # both load at the same time
        for name in ("gpu", "cpu"):
            assert supervisor.wait_ready(name, timeout_s=120).state is InstanceState.READY

        results: dict[int, str] = {}
        threads = [
            threading.Thread(target=lambda p=p: results.__setitem__(p, generate(p, "Hello")))
            for p in (p1, p2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert set(results) == {p1, p2} and all(isinstance(v, str) for v in results.values())

        # The environment each child received, read back from the child itself.
        assert status(p1)["instance"]["cuda_visible_devices"] == "GPU-bbbb-1,GPU-aaaa-0"
        assert status(p2)["instance"]["cuda_visible_devices"] == ""
        snaps = {s.name: s for s in supervisor.snapshots()}
        assert snaps["gpu"].pid == status(p1)["instance"]["pid"]
        assert snaps["gpu"].gpus == "auto" and snaps["cpu"].gpus == "cpu"

        gpu_pid = snaps["gpu"].pid
        stopped = supervisor.stop("gpu")
        assert stopped.state is InstanceState.STOPPED
        assert not pid_alive(gpu_pid)
        assert port_is_free("127.0.0.1", p1)
        assert store.launch("gpu") is None
        assert generate(p2, "Still there?") is not None  # the other one is untouched
    finally:
        supervisor.stop_all(grace_s=5)
    assert port_is_free("127.0.0.1", p2)
    assert store.launches() == []


def test_up_restarts_a_killed_instance_and_sigterm_leaves_nothing_running(
    paths: AppPaths, store: InstanceStore
) -> None:
    port = free_port()
    InstanceRegistry(store, paths).add(
        InstanceSpec(
            name="web", port=port, gpus="cpu", autostart=True, restart="on-failure", **SMALL
        )
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "koboldtui.cli", "up", "--interval", "0.2"],
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = wait_for(lambda: store.launch("web"), 60, "the first launch")
        wait_for(lambda: _healthy(port), 120, "the instance to be ready")
        os.kill(first.pid, signal.SIGKILL)
        second = wait_for(
            lambda: (l := store.launch("web")) and l.pid != first.pid and l,
            60,
            "a restart with a new pid",
        )
        wait_for(lambda: _healthy(port), 120, "the restarted instance to be ready")
        assert status(port)["instance"]["pid"] == second.pid
        ps = json.loads(cli("ps", "--json").stdout)
        assert ps == [
            {
                "name": "web",
                "state": "ready",
                "port": port,
                "pid": second.pid,
                "model": "bundled",
                "gpus": "cpu",
                "restarts": 1,
                "uptime_s": ps[0]["uptime_s"],
                "last_error": None,
                "kind": "serve",
                "started_by": "up",  # `up` started it, and its restart keeps that
                "vram_mib": None,
                "facts": ps[0]["facts"],
            }
        ]
        up.send_signal(signal.SIGTERM)
        out, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, out
    assert "killed by SIGKILL; restarting in 1 s" in out
    assert not pid_alive(second.pid) and not pid_alive(first.pid)
    assert port_is_free("127.0.0.1", port)
    assert store.launches() == []
    assert json.loads(cli("ps", "--json").stdout)[0]["state"] == "stopped"


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_later_controller_reattaches_instead_of_starting_a_duplicate(
    paths: AppPaths, store: InstanceStore
) -> None:
    port = free_port()
    InstanceRegistry(store, paths).add(InstanceSpec(name="keep", port=port, gpus="cpu", **SMALL))
    started = cli("start", "keep")  # this control process exits; the instance must not
    assert started.returncode == 0, started.stderr
    assert "ready" in started.stdout
    launch = store.launch("keep")
    assert launch is not None and pid_alive(launch.pid)
    assert os.getsid(launch.pid) == launch.pid  # its own session: survives the controller and SSH

    later = Supervisor(paths, store)
    assert later.reattach() == ["keep"]
    snap = later.start("keep")  # adopts; never a second process on the port
    assert snap.pid == launch.pid and snap.state is InstanceState.READY
    assert store.launch("keep").pid == launch.pid
    again = cli("start", "keep")
    assert (
        again.returncode == 0
        and f"already running on port {port} (pid {launch.pid}" in again.stdout
    )

    # The instance dies while no controller watches: the next one cleans the stale row.
    os.kill(launch.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(launch.pid), 10, "the kill")
    fresh = Supervisor(paths, store)
    assert fresh.reattach() == []
    assert store.launch("keep") is None
    gone = fresh.snapshot("keep")
    assert gone.state is InstanceState.FAILED and "stopped unexpectedly" in (gone.last_error or "")
    stopped = cli("stop", "keep")
    assert stopped.returncode == 0 and "keep is not running" in stopped.stdout

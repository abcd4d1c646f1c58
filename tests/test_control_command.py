"""Command instances: any server command line gets the whole lifecycle of a built-in instance.

The command is tests/fake_server.py (a stdlib HTTP server that answers like KoboldCpp or
llama-server), started through the real supervisor as a user's ``--cmd`` would be: ready
through its health path, the GPU env read back from inside the child, crash → restart,
SIGSTOP → watchdog, reattach from a second controller, stop with grace.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
from fake_nvml import FakeGpu, FakeNvml, GiB
from instance_harness import free_port, wait_for

from koboldtui.cli import main
from koboldtui.control.backoff import Backoff
from koboldtui.control.flavour import read_facts
from koboldtui.control.gpu_plan import default_gpu_planner
from koboldtui.control.ports import port_is_free
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.gpu.nvml import NvmlSession
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.gpus import reconcile, set_order
from koboldtui.store.instances import InstanceStore

pytestmark = pytest.mark.slow

FAKE = Path(__file__).resolve().parent / "fake_server.py"



def fake_cmd(flavour: str, extra: str = "") -> str:
    return f"{sys.executable} {FAKE} --port {{port}} --flavour {flavour} {extra}".strip()



@pytest.fixture
def store(paths: AppPaths) -> InstanceStore:
    return InstanceStore(open_database(paths.database))


def add(store: InstanceStore, paths: AppPaths, name: str, port: int, command: str, **kw) -> None:
    InstanceRegistry(store, paths).add(
        InstanceSpec(name=name, port=port, kind="command", command=command, **kw)
    )


def env_of(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/env", timeout=5).json()


def test_cpu_only_hides_every_gpu_inside_the_child_and_stop_frees_the_port(
    paths: AppPaths, store: InstanceStore, tmp_path: Path
) -> None:
    model = tmp_path / "weights.safetensors"
    model.write_bytes(b"x")
    port = free_port()
    add(store, paths, "img", port, fake_cmd("llama-server", "--load-s 1 --model {model}"),
        gpus="cpu", model=str(model))
    supervisor = Supervisor(paths, store)
    try:
        seen: list[str] = []
        snap = supervisor.start("img", wait=True, timeout_s=30,
                                progress=lambda s: seen.append(s.state.value))
        assert snap.state is InstanceState.READY and snap.kind == "command"
        assert "loading" in seen  # /health answered 503 "Loading model" first
        env = env_of(port)
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env["pid"] == snap.pid and str(model.resolve()) in env["argv"]  # {model} filled in
        log = Path(snap.log_path).read_text()
        assert "(CPU only)" in log and f"--port {port}" in log
        pid = snap.pid
        stopped = supervisor.stop("img", grace_s=5)
        assert stopped.state is InstanceState.STOPPED and not pid_alive(pid)
        assert port_is_free("127.0.0.1", port) and store.launch("img") is None
    finally:
        supervisor.stop_all(grace_s=2)


def test_gpu_priority_order_reaches_the_child(paths: AppPaths, store: InstanceStore) -> None:
    fake = FakeNvml([
        FakeGpu("GPU-aaaa-0", "Fake A", 24 * GiB, pci_bus_id="00000000:01:00.0"),
        FakeGpu("GPU-bbbb-1", "Fake B", 24 * GiB, pci_bus_id="00000000:02:00.0"),
    ])
    reconcile(store.conn, [("GPU-aaaa-0", "Fake A"), ("GPU-bbbb-1", "Fake B")])
    set_order(store.conn, ["GPU-bbbb-1", "GPU-aaaa-0"])
    port = free_port()
    add(store, paths, "txt", port, fake_cmd("koboldcpp"), gpus="auto", gpu_layers=-1)
    planner = default_gpu_planner(store, inventory_reader=NvmlSession(lambda: fake).read)
    supervisor = Supervisor(paths, store, gpu_planner=planner)
    try:
        supervisor.start("txt", wait=True, timeout_s=30)
        assert env_of(port)["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb-1,GPU-aaaa-0"
    finally:
        supervisor.stop_all(grace_s=2)


def test_a_crash_is_restarted_with_backoff_and_a_second_controller_reattaches(
    paths: AppPaths, store: InstanceStore
) -> None:
    port = free_port()
    add(store, paths, "kc", port, fake_cmd("koboldcpp"), gpus="cpu", restart="on-failure")
    supervisor = Supervisor(paths, store, backoff=Backoff(base_s=0.2))
    try:
        first = supervisor.start("kc", wait=True, timeout_s=30)
        # KoboldCpp has no /health: readiness came from the first known path answering 200
        assert supervisor._children["kc"].health_path == "/api/extra/version"
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{port}/crash", timeout=5)
        failed = wait_for(lambda: (s := supervisor.poll(["kc"])[0]).state is InstanceState.FAILED
                          and s, 15, "the crash to be seen")
        assert "exited with code 3" in failed.last_error and "restarting in" in failed.last_error
        again = wait_for(lambda: (s := supervisor.poll(["kc"])[0]).state is InstanceState.READY
                         and s, 30, "the restart to be ready")
        assert again.restarts == 1 and again.pid != first.pid

        # the panel dies; a new controller finds the child by the token in its environment
        other = Supervisor(paths, store)
        assert other.reattach() == ["kc"]
        adopted = wait_for(lambda: (s := other.poll(["kc"])[0]).state is InstanceState.READY
                           and s, 15, "the adopted instance to be ready")
        assert adopted.pid == again.pid
        other.stop("kc", grace_s=5)
        assert not pid_alive(again.pid) and port_is_free("127.0.0.1", port)
    finally:
        supervisor.stop_all(grace_s=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sigstopped_server_is_killed_by_the_watchdog(paths: AppPaths, store: InstanceStore) -> None:
    port = free_port()
    add(store, paths, "ls", port, fake_cmd("llama-server"), gpus="cpu", health="/health")
    clock = FakeClock()
    supervisor = Supervisor(paths, store, clock=clock, health_timeout_s=0.3)
    try:
        snap = supervisor.start("ls", wait=True, timeout_s=30)
        os.kill(snap.pid, signal.SIGSTOP)  # alive, holding the port, answering nothing
        clock.now += 10.0
        assert supervisor.poll(["ls"])[0].state is InstanceState.READY  # one silent look
        clock.now += 91.0
        failed = supervisor.poll(["ls"])[0]
        assert failed.state is InstanceState.FAILED
        assert "stopped answering /health for 90 s; it was killed" in failed.last_error
        assert not pid_alive(snap.pid) and port_is_free("127.0.0.1", port)
    finally:
        supervisor.stop_all(grace_s=2)


def test_flavours_are_read_from_what_each_server_answers(
    paths: AppPaths, store: InstanceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    ports = {"kc": free_port(), "img": free_port(), "ls": free_port(), "oa": free_port(),
             "sd": free_port()}
    add(store, paths, "kc", ports["kc"], fake_cmd("koboldcpp"), gpus="cpu")
    add(store, paths, "img", ports["img"], fake_cmd("koboldcpp", "--images"), gpus="cpu")
    add(store, paths, "ls", ports["ls"], fake_cmd("llama-server"), gpus="cpu")
    add(store, paths, "oa", ports["oa"], fake_cmd("openai"), gpus="cpu")
    add(store, paths, "sd", ports["sd"], fake_cmd("a1111"), gpus="cpu")
    supervisor = Supervisor(paths, store)
    try:
        for name in ports:
            supervisor.start(name)
        for name in ports:
            supervisor.wait_ready(name, timeout_s=30)
        facts = {n: read_facts(f"http://127.0.0.1:{p}") for n, p in ports.items()}
        kc, img, ls, oa = facts["kc"], facts["img"], facts["ls"], facts["oa"]
        assert (kc.flavour, kc.model, kc.version) == ("koboldcpp", "FakeKobold-7B", "1.99.fake")
        assert (kc.busy, kc.queue, kc.tokens_per_s, kc.images_done) == (True, 2, 42.5, None)
        assert (img.tokens_per_s, img.images_done) == (None, 7)  # an image instance: images, no tok/s
        assert (ls.flavour, ls.model, ls.slots_busy, ls.slots_total) == (
            "llama-server", "fake-llama-3b.gguf", 2, 4)
        assert (ls.busy, ls.queue, ls.tokens_per_s) == (True, 1, 12.5)
        assert (oa.flavour, oa.model, oa.busy, oa.queue, oa.tokens_per_s) == (
            "openai", "plain-model", None, None, None)  # nothing invented
        assert ls.summary() == "llama-server b9999-fake · busy · slots 2/4 · queue 1 · 12.5 tok/s"
        sd = facts["sd"]
        assert (sd.flavour, sd.model, sd.busy, sd.queue, sd.images_done) == (
            "a1111", "sd15.safetensors [6ce0161689]", True, None, None)
        assert supervisor._children["sd"].health_path == "/sdapi/v1/sd-models"

        # `koboldtui ps` (another controller: it adopts them by their launch tokens) shows the same
        assert main(["ps", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["ls"]["kind"] == "command" and rows["ls"]["state"] == "ready"
        assert rows["ls"]["facts"]["tokens_per_s"] == 12.5 and rows["oa"]["facts"]["queue"] is None
        assert main(["ps"]) == 0
        table = capsys.readouterr().out
        assert "koboldcpp 1.99.fake · busy · queue 2 · 42.5 tok/s" in table
        assert "koboldcpp 1.99.fake · busy · queue 2 · 7 images" in table
    finally:
        supervisor.stop_all(grace_s=2)


def test_relative_paths_in_the_command_mean_the_folder_it_was_added_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.chdir(FAKE.parent)
    assert main(["instance", "add", "rel", "--port", str(port), "--cpu",
                 "--cmd", f"{sys.executable} fake_server.py --port {{port}}"]) == 0
    monkeypatch.chdir("/")
    try:
        assert main(["start", "rel", "--timeout", "30"]) == 0, capsys.readouterr().err
        assert "rel is ready" in capsys.readouterr().out
        assert main(["ps"]) == 0
        assert "plain-model" in capsys.readouterr().out  # the MODEL column: what it serves
    finally:
        assert main(["stop", "rel"]) == 0


def test_a_server_of_an_unexpected_shape_gives_no_facts_not_an_error(
    paths: AppPaths, store: InstanceStore
) -> None:
    port = free_port()
    add(store, paths, "odd", port, fake_cmd("odd"), gpus="cpu")
    supervisor = Supervisor(paths, store)
    try:
        supervisor.start("odd", wait=True, timeout_s=30)  # "/health" answers 200
        base = f"http://127.0.0.1:{port}"
        assert read_facts(base).flavour == "unknown"
        for flavour in ("koboldtui", "koboldcpp", "llama-server", "a1111", "openai"):
            facts = read_facts(base, flavour=flavour)
            assert facts.flavour == flavour and facts.model is None and facts.busy is None
    finally:
        supervisor.stop_all(grace_s=2)


def test_a_remote_that_answers_404_everywhere_is_unreachable_with_why(
    paths: AppPaths, store: InstanceStore
) -> None:
    port = free_port()
    add(store, paths, "kc", port, fake_cmd("koboldcpp"), gpus="cpu")  # 404 on /health and /
    InstanceRegistry(store, paths).add(
        InstanceSpec(name="wrong", port=port, kind="remote", url=f"http://127.0.0.1:{port}/api")
    )
    supervisor = Supervisor(paths, store)
    try:
        supervisor.start("kc", wait=True, timeout_s=30)
        supervisor.look_at_remotes(wait_s=10)  # looked at in the background; wait for it here
        snap = supervisor.snapshot("wrong")  # the URL has a path: every route is under /api
        assert snap.state is InstanceState.UNREACHABLE
        assert "answers, but not like a model server (HTTP 404" in snap.last_error
    finally:
        supervisor.stop_all(grace_s=2)

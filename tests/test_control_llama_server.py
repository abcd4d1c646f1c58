"""A real ``llama-server`` (llama.cpp's own server) as a command instance on the bundled model.

Runs only where the binary exists (on PATH, or named by ``KOBOLDTUI_LLAMA_SERVER``): build
it from the llama.cpp that llama-cpp-python vendors (``cmake -B build && cmake --build
build --target llama-server``). Elsewhere it is skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import socket

import httpx
import pytest

from koboldtui.control.flavour import read_facts
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore

pytestmark = pytest.mark.slow
BINARY = os.environ.get("KOBOLDTUI_LLAMA_SERVER") or shutil.which("llama-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(BINARY is None, reason="no llama-server binary (set KOBOLDTUI_LLAMA_SERVER)")
def test_llama_server_serves_the_bundled_model_as_a_command_instance(bundled_model) -> None:
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    port = free_port()
    command = f"{BINARY} --host 127.0.0.1 --port {{port}} -m {{model}} -c 1024 -np 2 -t 1 --metrics"
    InstanceRegistry(store, paths).add(
        InstanceSpec(name="ls", port=port, kind="command", command=command, gpus="cpu")
    )
    supervisor = Supervisor(paths, store)
    try:
        snap = supervisor.start("ls", wait=True, timeout_s=120)
        assert snap.state is InstanceState.READY
        reply = httpx.post(f"http://127.0.0.1:{port}/completion",
                           json={"prompt": "Hello", "n_predict": 4}, timeout=60)
        assert reply.status_code == 200 and "content" in reply.json()
        facts = read_facts(f"http://127.0.0.1:{port}")
        assert facts.flavour == "llama-server" and facts.slots_total == 2
        assert facts.model is not None and "gemma" in facts.model.lower()
        supervisor.stop("ls", grace_s=10)
        assert not pid_alive(snap.pid)
    finally:
        supervisor.stop_all(grace_s=5)

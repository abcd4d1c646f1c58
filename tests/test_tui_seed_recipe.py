"""The seed recipe end to end from the panel: text on the GPU (5001-style) and images on the CPU, side by side.

The real panel (LiveBackend, supervisor, NVML sampler with two fake GPUs) runs two command
instances whose command is tests/fake_server.py answering like KoboldCpp (text, and an
``--sdmodel`` image one). They are started with ``s``, watched (rows say what each server
says, the text one's VRAM by pid), and stopped with ``x``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from fake_nvml import FakeGpu, FakeNvml, GiB
from instance_harness import free_port
from textual.widgets import Static

from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.gpu.nvml import set_nvml_module
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore
from koboldtui.tui.app import KoboldPanel
from koboldtui.tui.live_backend import LiveBackend
from koboldtui.tui.widgets.instance_tables import InstancesTable
from tests.test_tui_dashboard import wait_for

pytestmark = pytest.mark.slow
FAKE = Path(__file__).resolve().parent / "fake_server.py"


def env_of(port: int) -> dict:
    """What the child received, read from inside it."""
    return httpx.get(f"http://127.0.0.1:{port}/env", timeout=5).json()



async def test_text_on_the_gpu_and_images_on_the_cpu_started_watched_and_stopped() -> None:
    fake = FakeNvml([FakeGpu("GPU-aaaa-0", "Fake A", 24 * GiB)])
    set_nvml_module(fake)
    paths = app_paths().ensure()
    registry = InstanceRegistry(InstanceStore(open_database(paths.database)), paths)
    ports = {"text": free_port(), "image": free_port()}
    registry.add(InstanceSpec(name="text", port=ports["text"], kind="command", gpus="auto",
                              command=f"{sys.executable} {FAKE} --port {{port}} --flavour koboldcpp"))
    registry.add(InstanceSpec(name="image", port=ports["image"], kind="command", gpus="cpu",
                              command=f"{sys.executable} {FAKE} --port {{port}} --flavour koboldcpp --images"))
    backend = LiveBackend(gpu_interval_s=0.2)
    app = KoboldPanel(backend, refresh_s=0.3, gpu_refresh_s=0.5, countdown_tick_s=None)

    def view(name: str):
        return next((i for i in app.instances if i.name == name), None)

    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: view("text") and view("image"), timeout=20)
            for name in ("text", "image"):
                for _ in range(50):  # the table's own highlight event may land after ours
                    app.select_instance(name)
                    await pilot.pause(0.05)
                    if app.selected_instance == name:
                        break
                await pilot.press("s")
                await wait_for(pilot, lambda n=name: view(n).state != "stopped", timeout=20)
            await wait_for(pilot, lambda: all(view(n).facts for n in ports), timeout=60)
            pids = {n: view(n).pid for n in ports}
            env = {n: await asyncio.to_thread(env_of, p) for n, p in ports.items()}
            assert env["text"]["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa-0"
            assert env["image"]["CUDA_VISIBLE_DEVICES"] == ""  # the image one never sees the GPU
            fake.gpus[0].processes = [(pids["text"], 5 * GiB)]  # the text server on the GPU
            await wait_for(pilot, lambda: view("text").vram_mib == 5 * 1024, timeout=20)
            await pilot.pause(0.4)
            table = app.screen.query_one(InstancesTable)
            assert "FakeKobold-7B" in table.cells("text")[1] and "5.0G" in table.cells("text")[3]
            assert "busy" in table.cell("image", "state")
            app.select_instance("image")
            await wait_for(pilot, lambda: "7 images" in str(
                app.screen.query_one("#horde-title", Static).render()), timeout=10)
            for name in ("text", "image"):
                app.select_instance(name)
                await pilot.press("x")
            await wait_for(pilot, lambda: all(view(n).state == "stopped" for n in ports), timeout=30)
            assert not any(pid_alive(pid) for pid in pids.values())
    finally:
        backend.close(stop_instances=True)
        set_nvml_module(None)

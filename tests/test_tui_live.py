"""The panel against the real thing: LiveBackend, the supervisor, a `koboldtui serve` child, real HTTP.

First run creates an instance on the bundled model and starts it; the dashboard shows it
ready with its batch numbers; a prompt streams real tokens; quitting with "yes" stops it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import TextArea

from koboldtui.tui.app import KoboldPanel
from koboldtui.tui.live_backend import LiveBackend
from koboldtui.tui.screens.confirm import ConfirmScreen
from koboldtui.tui.screens.prompt import PromptScreen
from koboldtui.tui.widgets.instance_tables import BatchTable, InstancesTable
from tests.test_tui_dashboard import wait_for
from tests.tui_fakes import screen_text

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow


async def test_first_run_starts_a_real_instance_streams_a_prompt_and_stops_on_quit(bundled_model: Path) -> None:
    backend = LiveBackend()
    app = KoboldPanel(backend, refresh_s=0.5, gpu_refresh_s=2.0, countdown_tick_s=None)
    app.prompt_max_tokens = 12  # a short answer: this machine's CPU is shared
    stopped = False
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_for(pilot, lambda: any(i.name == "default" for i in app.instances), timeout=20)
            await wait_for(pilot, lambda: any(i.state == "ready" and i.status for i in app.instances), timeout=120)
            await pilot.pause(0.6)
            table = app.screen.query_one(InstancesTable)
            assert "ready" in str(table.cell("default", "state"))
            view = next(i for i in app.instances if i.name == "default")
            assert view.rss_bytes is not None and view.rss_bytes > 50 * 1024**2  # the model sits in its memory
            assert app.gpu_report.machine is not None and app.gpu_report.machine.mem_total_bytes > 0
            batch = app.screen.query_one(BatchTable).cells("default")
            assert batch[1] == "512" and batch[2] == "512"
            text = screen_text(app)
            assert "No NVIDIA GPU" in text or "GPUs" in text
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
            prompt = app.screen
            await pilot.press(*"Hello", "enter")
            await wait_for(pilot, lambda: prompt.tokens > 0, timeout=60)
            await wait_for(pilot, lambda: "done" in str(prompt.query_one("#prompt-status").render()), timeout=60)
            assert prompt.query_one(TextArea).text == prompt.output and prompt.output.strip()
            await pilot.press("escape", "Q")  # Q: stop everything and quit (q leaves them running)
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
        assert app.stop_on_exit is True
        pid = next(i.pid for i in app.instances if i.name == "default")
    finally:
        backend.close(stop_instances=True)
        stopped = True
    assert stopped
    deadline = time.monotonic() + 10
    import os

    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(f"instance pid {pid} still runs after quitting with 'stop them'")


def test_saving_an_unchanged_form_keeps_the_gpu_choice_and_stop_sticks() -> None:
    """e then ctrl+s must never turn a CPU instance into 'auto' (it would take GPUs on a GPU box);
    an instance the person stopped stays stopped in the next panel (autostart off)."""
    from dataclasses import replace

    from koboldtui.config import ServeConfig
    from koboldtui.tui.backend import InstanceDraft

    backend = LiveBackend()
    try:
        backend.save_instance(InstanceDraft(ServeConfig(name="cpu-one", port=5301, gpu_layers=0), ()), None)
        assert backend.registry.get("cpu-one").gpus == "cpu" and backend.registry.get("cpu-one").autostart
        backend.save_instance(backend.draft_for("cpu-one"), "cpu-one")
        assert backend.registry.get("cpu-one").gpus == "cpu"
        backend.registry.edit("cpu-one", {"gpus": "auto"})
        draft = backend.draft_for("cpu-one")
        backend.save_instance(replace(draft, config=replace(draft.config, ctx=4096)), "cpu-one")
        assert backend.registry.get("cpu-one").gpus == "auto" and backend.registry.get("cpu-one").ctx == 4096
        backend.stop_instance("cpu-one")
        assert backend.registry.get("cpu-one").autostart is False
        view = next(v for v in backend.instances() if v.name == "cpu-one")
        assert view.state == "stopped"  # not autostarted by the panel's first poll
        # 'auto' on a machine without a GPU means the CPU, and the row says so
        assert view.gpus == ("CPU" if not backend.gpu_report().gpus else "auto")
    finally:
        backend.close(stop_instances=True)

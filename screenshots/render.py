"""Render the README screenshots (SVG) from deterministic fake data: same input, same pictures.

Run from the repository root:  .venv/bin/python screenshots/render.py
The fake stands in for GPUs and a busy AI Horde that a build machine does not have.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KOBOLDTUI_HOME", tempfile.mkdtemp(prefix="koboldtui-shots-"))

from textual._doc import take_svg_screenshot
from textual.widgets import Input

from koboldtui.tui.app import KoboldPanel
from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
from koboldtui.tui.screens.instance_form import InstanceFormScreen
from tests.tui_fakes import FakeBackend, FakeClock

OUT = Path(__file__).resolve().parent


def panel(gpus: bool = True, theme: str = "kobold") -> KoboldPanel:
    return KoboldPanel(FakeBackend(gpus=gpus), clock=FakeClock(), refresh_s=3600, gpu_refresh_s=3600,
                       countdown_tick_s=None, theme_name=theme)


async def _until(pilot, predicate) -> None:
    for _ in range(300):
        if predicate():
            return
        await pilot.pause(0.01)


async def dashboard(pilot) -> None:
    await _until(pilot, lambda: pilot.app.polls_done and pilot.app.gpu_polls_done)
    await pilot.pause()


async def instance_form(pilot) -> None:
    await dashboard(pilot)
    await pilot.press("n")
    await _until(pilot, lambda: isinstance(pilot.app.screen, InstanceFormScreen) and pilot.app.screen.fit_text)
    pilot.app.screen.query_one("#gpu_layers", Input).value = "24"
    await _until(pilot, lambda: "fits" in pilot.app.screen.fit_text)
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.1)


async def gpu_priority(pilot) -> None:
    await dashboard(pilot)
    await pilot.press("g")
    await _until(pilot, lambda: isinstance(pilot.app.screen, GpuPriorityScreen))
    await pilot.pause()


async def horde_busy(pilot) -> None:
    """The countdown mid-drain right after a local request restarted it."""
    app = pilot.app
    await dashboard(pilot)
    await pilot.press("2")
    app.backend.horde_remaining = 20.0
    app.clock.advance(0.6)
    app.poll_now()
    before = app.polls_done
    await _until(pilot, lambda: app.polls_done > before)
    await pilot.pause()


async def horde_view(pilot) -> None:
    """The Horde contribution view after a few polls (sparklines need some history)."""
    app = pilot.app
    await dashboard(pilot)
    for step in range(12):
        app.backend.horde_kudos_bump = step  # the worker's totals grow, a poll every 5 s
        app.clock.advance(5.0)
        before = app.polls_done
        app.poll_now()
        await _until(pilot, lambda before=before: app.polls_done > before)
    await pilot.press("H")
    await _until(pilot, lambda: type(app.screen).__name__ == "HordeScreen")
    await pilot.pause(0.1)


async def failed_detail(pilot) -> None:
    """A failed instance: the reason in its row, and Enter's detail pane with the log tail."""
    app = pilot.app
    await dashboard(pilot)
    app.backend.states["chat-cpu"] = "failed"
    app.backend.errors["chat-cpu"] = FAILED_LOAD
    app.backend.log = FAILED_LOG
    before = app.polls_done
    app.poll_now()
    await _until(pilot, lambda: app.polls_done > before)
    app.clear_notifications()
    await pilot.press("5", "down", "enter")
    await _until(pilot, lambda: type(app.screen).__name__ == "InstanceDetailScreen" and app.screen.tail)
    await pilot.pause(0.1)


FAILED_LOG = [
    "2026-12-03 10:00:01,112 INFO koboldtui.serve: koboldtui serve chat-cpu on 127.0.0.1:5002",
    "2026-12-03 10:00:01,140 INFO koboldtui.serve: loading /models/Llama-3.1-8B-Instruct-Q4_K_M.gguf",
    "llama_model_loader: loaded meta data with 33 key-value pairs and 292 tensors",
    ("llama_model_load: error loading model: tensor 'blk.17.ffn_down.weight' data is not within the file "
     "bounds, model is corrupted or incomplete"),
    "llama_load_model_from_file: failed to load model",
    "2026-12-03 10:00:02,004 ERROR koboldtui.serve: the model failed to load: download it again",
]
FAILED_LOAD = "exited with code 1; restarting in 8 s\nlast log lines:\n" + "\n".join("  " + x for x in FAILED_LOG[-3:])


SHOTS = [
    ("dashboard-120x40.svg", lambda: panel(), (120, 40), dashboard),
    ("dashboard-80x24.svg", lambda: panel(), (80, 24), dashboard),
    ("dashboard-200x60.svg", lambda: panel(), (200, 60), dashboard),
    ("dashboard-cpu-200x60.svg", lambda: panel(gpus=False), (200, 60), dashboard),
    ("dashboard-cpu-120x40.svg", lambda: panel(gpus=False), (120, 40), dashboard),
    ("instance-form-120x40.svg", lambda: panel(), (120, 40), instance_form),
    ("gpu-priority-120x40.svg", lambda: panel(), (120, 40), gpu_priority),
    ("horde-countdown-120x40.svg", lambda: panel(theme="horde-night"), (120, 40), horde_busy),
    ("dashboard-phosphor-120x40.svg", lambda: panel(theme="phosphor"), (120, 40), dashboard),
    ("horde-view-120x40.svg", lambda: panel(theme="horde-night"), (120, 40), horde_view),
    ("failed-instance-120x40.svg", lambda: panel(), (120, 40), failed_detail),
]


def main() -> int:
    for name, make, size, before in SHOTS:
        svg = take_svg_screenshot(make(), terminal_size=size, run_before=before, title="koboldtui")
        (OUT / name).write_text(svg, encoding="utf-8")
        print(f"wrote screenshots/{name}")
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())

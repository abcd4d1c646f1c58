"""Key-to-repaint of every key that opens a dialog, against the 150 ms target.

    PYTHONPATH=. python bench/panel_keys.py [--rounds 5] [--backend live|fake]

Runs the real panel headless over a throwaway KOBOLDTUI_HOME (``live``: the real backend
with one stopped instance on the bundled model; ``fake``: the test FakeBackend, which has
two GPUs and three instances, so the GPU fields are drawn too) and presses, one at a time,
``ctrl+p`` (palette), ``n`` (new instance form), ``e`` (edit form), ``g`` (GPU priority),
``b`` (batch form) and ``m`` (model picker). For each it prints two medians:

* **paint**: from the key event to the first frame the compositor renders with the dialog
  on top (what the eye sees first; Textual's headless driver is hooked where it would
  write that frame to the terminal);
* **cpu**: the UI thread's own CPU time over the same span: what the paint would take on
  an idle machine (other processes and the panel's worker threads do not count), the
  steadiest of the three on a loaded box;
* **ready**: to the first frame after the dialog is filled (the model list has the
  catalogue, the port check answered).

and the ratio of each to the 150 ms target (< 1.00x is under target). One run, side by
side, so a loaded machine slows every key alike; compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

TARGET_MS = 150.0
KEYS = ("ctrl+p", "n", "e", "g", "b", "m")


def make_app(kind: str) -> tuple[Any, Callable[[], None]]:
    """The panel over a live backend (one stopped instance) or the tests' FakeBackend."""
    from koboldtui.tui.app import KoboldPanel

    kwargs: dict[str, Any] = {"refresh_s": 3600, "gpu_refresh_s": 3600, "countdown_tick_s": None,
                              "first_run": False, "catalog_refresh_s": 0}
    if kind == "fake":
        from tests.tui_fakes import FakeBackend

        return KoboldPanel(FakeBackend(), **kwargs), lambda: None
    from koboldtui.tui.live_backend import LiveBackend

    backend = LiveBackend()
    backend.save_instance(backend.default_draft(), None)
    # The panel autostarts the saved instance: stop it on the way out, or each run leaves a
    # server behind on a deleted KOBOLDTUI_HOME.
    return KoboldPanel(backend, **kwargs), lambda: backend.close(stop_instances=True)


def ready_check(app: Any, key: str) -> Callable[[], bool]:
    """True once the dialog the key opened is on top and filled."""
    from textual.command import CommandList, CommandPalette

    from koboldtui.tui.screens.gpu_priority import GpuPriorityScreen
    from koboldtui.tui.screens.instance_form import InstanceFormScreen
    from koboldtui.tui.screens.pickers import BatchFormScreen, ModelPickerScreen

    def check() -> bool:
        screen = app.screen
        if key == "ctrl+p":  # the palette lists the models as commands once its providers answered
            return (isinstance(screen, CommandPalette) and screen.is_mounted
                    and screen.query_one(CommandList).option_count > 0)
        if key in ("n", "e"):
            return (isinstance(screen, InstanceFormScreen) and screen.is_mounted
                    and bool(screen.query_one("#model")._options) and screen.port_checked)
        if key == "m":
            return isinstance(screen, ModelPickerScreen) and screen.is_mounted and bool(screen.models)
        wanted = {"g": GpuPriorityScreen, "b": BatchFormScreen}[key]
        return isinstance(screen, wanted) and screen.is_mounted

    return check


async def measure(kind: str, rounds: int, keys: tuple[str, ...] = KEYS) -> dict[str, dict[str, list[float]]]:
    from textual import events

    app, close = make_app(kind)
    results: dict[str, dict[str, list[float]]] = {key: {"paint": [], "ready": [], "cpu": []} for key in keys}
    painted: list[tuple[float, Any, float]] = []
    real_display = app._display

    def display(screen: Any, renderable: Any) -> None:  # where the frame would go to the terminal
        if renderable is not None:
            painted.append((time.perf_counter(), screen, time.thread_time()))
        real_display(screen, renderable)

    app._display = display
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            while app.catalog_models is None or not app.instances:
                await pilot.pause(0.05)
            await pilot.pause(0.3)
            dashboard = app.screen
            for _ in range(rounds):
                for key in keys:
                    ready = ready_check(app, key)
                    painted.clear()
                    start, cpu = time.perf_counter(), time.thread_time()
                    app.post_message(events.Key(key, key if len(key) == 1 else None))
                    while not ready():
                        await asyncio.sleep(0.005)
                    filled = time.perf_counter()
                    screen = app.screen
                    while not any(s is screen and t >= filled for t, s, _ in painted):
                        await asyncio.sleep(0.005)
                    first, first_cpu = next((t, c) for t, s, c in painted if s is screen)
                    repainted = next(t for t, s, _ in painted if s is screen and t >= filled)
                    results[key]["paint"].append((first - start) * 1000)
                    results[key]["cpu"].append((first_cpu - cpu) * 1000)
                    results[key]["ready"].append((repainted - start) * 1000)
                    await pilot.press("escape")
                    while app.screen is not dashboard:
                        await asyncio.sleep(0.005)
                    await pilot.pause(0.1)
    finally:
        close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=("live", "fake"), default="live")
    parser.add_argument("--keys", default=",".join(KEYS), help="comma-separated subset of " + ",".join(KEYS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["KOBOLDTUI_HOME"] = home
        keys = tuple(k for k in args.keys.split(",") if k in KEYS)
        results = asyncio.run(measure(args.backend, args.rounds, keys))
    print(f"key-to-repaint, {args.backend} backend, median of {args.rounds} (ms; ratio to the {TARGET_MS:.0f} ms target)")
    print(f"  {'key':7} " + "   ".join(f"{column:>7} {'ratio':>6}" for column in ("paint", "cpu", "ready")))
    for key, times in results.items():
        cells = [statistics.median(times[column]) for column in ("paint", "cpu", "ready")]
        print(f"  {key:7} " + "   ".join(f"{ms:7.1f} {ms / TARGET_MS:5.2f}x" for ms in cells))


if __name__ == "__main__":
    main()

"""Key-to-repaint of the panel's slow keys, with the cached catalogue and without, side by side.

    PYTHONPATH=. python bench/panel_keys.py [--rounds 5]

Runs the real panel (LiveBackend over a throwaway KOBOLDTUI_HOME with the bundled model in
its models folder) headless, presses ``ctrl+p`` (command palette, which lists every model)
and ``n`` (the instance form, which fills its model list), and times each key until the new
screen is mounted, filled and repainted. "uncached" empties the app's catalogue before each
key, which is what every key did before the catalogue was cached. Prints medians and the
ratio; the target is < 150 ms on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time


async def measure(rounds: int) -> dict[str, list[float]]:
    from textual.command import CommandPalette

    from koboldtui.tui.app import KoboldPanel
    from koboldtui.tui.live_backend import LiveBackend
    from koboldtui.tui.screens.instance_form import InstanceFormScreen

    backend = LiveBackend()
    app = KoboldPanel(backend, refresh_s=3600, gpu_refresh_s=3600, countdown_tick_s=None, first_run=False,
                      catalog_refresh_s=0)
    results: dict[str, list[float]] = {}
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            while app.catalog_models is None:
                await pilot.pause(0.05)
            cache = list(app.catalog_models)
            for cached in (True, False):
                for key, ready in (("ctrl+p", lambda: isinstance(app.screen, CommandPalette)),
                                   ("n", lambda: isinstance(app.screen, InstanceFormScreen))):
                    times = results.setdefault(f"{key:7} {'cached' if cached else 'uncached'}", [])
                    for _ in range(rounds):
                        app.catalog_models = list(cache) if cached else None
                        start = time.perf_counter()
                        await pilot.press(key)
                        while not ready():
                            await asyncio.sleep(0.001)
                        screen = app.screen
                        if isinstance(screen, InstanceFormScreen):  # filled: the model list has the bundled one
                            while not screen.query_one("#model")._options:
                                await asyncio.sleep(0.001)
                        await pilot.pause()  # one repaint
                        times.append((time.perf_counter() - start) * 1000)
                        await pilot.press("escape")
                        while app.screen is screen:
                            await asyncio.sleep(0.001)
                        await pilot.pause(0.05)
    finally:
        backend.close(stop_instances=False)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["KOBOLDTUI_HOME"] = home
        results = asyncio.run(measure(args.rounds))
    medians = {name: statistics.median(times) for name, times in results.items()}
    print(f"key-to-repaint, median of {args.rounds} (ms)")
    for name, value in medians.items():
        print(f"  {name:18} {value:7.1f}")
    for key in ("ctrl+p", "n"):
        fast, slow = medians[f"{key:7} cached"], medians[f"{key:7} uncached"]
        print(f"  {key}: uncached/cached = {slow / fast:.2f}x")


if __name__ == "__main__":
    main()

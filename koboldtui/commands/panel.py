"""``koboldtui`` with no arguments (or ``koboldtui panel``): open the Textual control panel."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``koboldtui panel`` (the same as no subcommand, with options)."""
    parser = sub.add_parser("panel", help="open the control panel (the default with no command)")
    parser.add_argument("--refresh", type=float, default=1.0, metavar="S",
                        help="seconds between status polls (default 1.0)")
    parser.add_argument("--theme", default=None, help="theme to use (saved for next time)")
    parser.add_argument("--no-first-run", action="store_true",
                        help="do not create an instance on the bundled model when none exist")
    parser.set_defaults(handler=run_panel)


def run_panel(args: argparse.Namespace) -> int:
    """Open the panel over the real supervisor; on quit stop instances only if the user said so."""
    from koboldtui.paths import app_paths

    try:
        from koboldtui.tui.app import KoboldPanel
        from koboldtui.tui.live_backend import LiveBackend
    except ImportError as exc:  # pragma: no cover - broken install
        print(f"koboldtui: error: the panel cannot load ({exc}): reinstall koboldtui", file=sys.stderr)
        return 1
    paths = app_paths().ensure()
    try:
        backend = LiveBackend(paths)
    except Exception as exc:  # noqa: BLE001 - shown to the person, never raised into the UI
        print(f"koboldtui: error: cannot open the control plane in {paths.data_dir}: {exc}", file=sys.stderr)
        return 1
    refresh = max(0.2, float(getattr(args, "refresh", 1.0) or 1.0))
    theme = getattr(args, "theme", None) or backend.get_setting("theme")
    app = KoboldPanel(
        backend, paths=paths, refresh_s=refresh, gpu_refresh_s=refresh, theme_name=theme,
        first_run=not getattr(args, "no_first_run", False),
    )
    try:
        app.run()
    finally:
        if app.stop_on_exit:
            print("koboldtui: stopping the running instances…", file=sys.stderr)
        # else the panel printed which instances keep running (and how to stop them)
        backend.close(stop_instances=app.stop_on_exit)
    return int(app.return_code or 0)

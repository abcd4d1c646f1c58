"""``koboldtui``: the panel with no arguments, else a subcommand (serve, gpus, instance, ...)."""

from __future__ import annotations

import argparse
import importlib
import os
import sqlite3
import sys

from koboldtui import __version__
from koboldtui.store.faults import StorageError, explain

# Each module in koboldtui.commands registers its own subcommands; a missing one is skipped
# so a partial checkout still runs what it has.
COMMAND_MODULES = ("serve", "gpus", "instances", "horde", "panel", "gateway")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koboldtui",
        description="Terminal control panel for local LLMs; lends idle capacity to the AI Horde.",
    )
    parser.add_argument("--version", action="version", version=f"koboldtui {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"koboldtui.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"koboldtui.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        # No subcommand: open the panel (falls back to help if the panel is not installed).
        try:
            from koboldtui.commands import panel
        except ModuleNotFoundError:
            parser.print_help()
            return 0
        handler = panel.run_panel
    try:
        code = int(handler(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left (`| head`) is noticed here
        return code
    except BrokenPipeError:
        return _reader_left()
    except (OSError, sqlite3.Error, StorageError) as exc:  # a disk fault: one line, no traceback
        words = str(exc) if isinstance(exc, StorageError) else explain(exc, getattr(exc, "filename", None))
        if words is None:
            raise
        print(f"koboldtui: {words}", file=sys.stderr)
        return 1


def _reader_left() -> int:
    """The command's reader closed the pipe (`koboldtui ps --json | head`): stop quietly, as
    shell tools do, and keep Python from complaining about the unflushed rest at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what the shell reports for a tool killed by the pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

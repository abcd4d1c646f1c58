"""The handlers behind ``koboldtui instance|start|stop|ps|logs|up``, apart from their parsers."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from koboldtui.commands.instance_kinds import (
    facts_cell,
    instance_vram,
    kind_changes,
    kind_label,
    model_cell,
    ps_model_cell,
    supervisor_facts,
    vram_cell,
    vram_mib,
)
from koboldtui.config import HordeSettings
from koboldtui.control import logs as logfiles
from koboldtui.control.foreground import run_foreground
from koboldtui.control.registry import UNSET, InstanceRegistry
from koboldtui.control.secrets import SecretsError
from koboldtui.control.spec import InstanceSpec, SpecError, parse_gpus
from koboldtui.control.state import InstanceSnapshot, InstanceState, StartError
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import AppPaths, app_paths
from koboldtui.store.db import DatabaseError, open_database
from koboldtui.store.instances import InstanceStore, InstanceStoreError

HORDE_KEY_ENV = "KOBOLDTUI_HORDE_KEY"
API_KEY_ENV = "KOBOLDTUI_API_KEY"

# spec field → (argparse dest); the same flags for add and edit
SPEC_FLAGS = (
    "model",
    "host",
    "port",
    "gpu_layers",
    "ctx",
    "batch_size",
    "parallel",
    "threads",
    "max_queue",
    "restart",
    "alias",
    "ttl_min",
    "pin",
)
HORDE_FLAGS = {
    "horde_name": "worker_name",
    "horde_url": "url",
    "horde_window": "window_s",
    "horde_threads": "threads",
    "horde_max_length": "max_length",
    "horde_model_name": "model_name",
    "horde_bridge_agent": "bridge_agent",
}


def _fail(message: str) -> int:
    print(f"koboldtui: error: {message}", file=sys.stderr)
    return 1


def _open(paths: AppPaths | None = None) -> tuple[AppPaths, InstanceStore]:
    paths = (paths or app_paths()).ensure()
    return paths, InstanceStore(open_database(paths.database))


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a person can act on into one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (StartError, SpecError, InstanceStoreError, SecretsError, DatabaseError) as exc:
            return _fail(str(exc))

    run.__doc__ = handler.__doc__
    return run


# -- flags to spec changes -----------------------------------------------------------------


def _changes(args: argparse.Namespace, base: HordeSettings) -> dict[str, Any]:
    """The spec fields the user gave on the command line (others unchanged)."""
    changes: dict[str, Any] = {
        f: getattr(args, f) for f in SPEC_FLAGS if getattr(args, f) is not None
    }
    changes.update(kind_changes(args.cmd, args.url, args.health))
    if args.cpu:
        changes["gpus"] = "cpu"
    elif args.gpus is not None:
        changes["gpus"] = parse_gpus(args.gpus)
    if args.autostart is not None:
        changes["autostart"] = args.autostart
    if args.env is not None:
        env: dict[str, str] = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise SpecError(f"--env {item!r} must look like KEY=VALUE")
            env[key] = value
        changes["extra_env"] = env
    horde: dict[str, Any] = {}
    if args.horde is not None:
        horde["enabled"] = args.horde
    for flag, field_name in HORDE_FLAGS.items():
        if getattr(args, flag) is not None:
            horde[field_name] = getattr(args, flag)
    for flag, field_name in (("horde_nsfw", "nsfw"), ("horde_preempt", "preempt")):
        if getattr(args, flag) is not None:
            horde[field_name] = getattr(args, flag)
    if horde:
        changes["horde"] = HordeSettings(**{**base.__dict__, **horde, "api_key": ""})
    return changes


# -- instance add / edit / rm / list -------------------------------------------------------


@_guarded
def cmd_add(args: argparse.Namespace) -> int:
    """Save a new instance."""
    changes = _changes(args, HordeSettings())
    if args.port is None and changes.get("kind") != "remote":
        return _fail("--port is required: the HTTP port the instance listens on (e.g. --port 5001)")
    paths, store = _open()
    spec = InstanceSpec(name=args.name, port=changes.get("port", 0)).with_changes(**changes)
    horde_key = args.horde_key if args.horde_key is not None else os.environ.get(HORDE_KEY_ENV)
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    spec = InstanceRegistry(store, paths).add(spec, horde_key=horde_key, api_key=api_key)
    if spec.is_remote:
        print(f"added remote instance {spec.name!r} at {spec.url}; `koboldtui ps` shows how it is")
        return 0
    what = f"$ {spec.command}" if spec.kind == "command" else spec.model
    print(
        f"added instance {spec.name!r} on port {spec.port} ({what}); "
        f"start it with `koboldtui start {spec.name}`"
    )
    return 0


@_guarded
def cmd_edit(args: argparse.Namespace) -> int:
    """Change a saved instance; a running one picks the change up at its next start."""
    paths, store = _open()
    registry = InstanceRegistry(store, paths)
    current = registry.get(args.name)
    changes = _changes(args, current.horde)
    horde_key = UNSET if args.horde_key is None else args.horde_key
    api_key = UNSET if args.api_key is None else args.api_key
    if not changes and horde_key is UNSET and api_key is UNSET:
        return _fail("nothing to change: give the flags to change, e.g. --port 5002")
    registry.edit(args.name, changes, horde_key=horde_key, api_key=api_key)
    note = ""
    if store.launch(args.name) is not None:
        note = f"; it is running: `koboldtui stop {args.name} && koboldtui start {args.name}` applies it"
    print(f"updated instance {args.name!r}{note}")
    return 0


@_guarded
def cmd_rm(args: argparse.Namespace) -> int:
    """Delete a saved instance (refused while it runs, unless --force stops it first)."""
    paths, store = _open()
    registry = InstanceRegistry(store, paths)
    registry.get(args.name)
    supervisor = Supervisor(paths, store)
    snap = supervisor.stop(args.name) if args.force else None
    if snap is None and store.launch(args.name) is not None:
        supervisor.reattach()
        if supervisor.is_running(args.name):
            return _fail(
                f"{args.name!r} is running: stop it first (`koboldtui stop {args.name}`) "
                "or pass --force"
            )
    registry.remove(args.name)  # its run record goes with it
    print(f"removed instance {args.name!r}")
    return 0


@_guarded
def cmd_list(args: argparse.Namespace) -> int:
    """Print the saved specs."""
    paths, store = _open()
    specs = InstanceRegistry(store, paths).list()
    if args.json:
        print(json.dumps([s.to_dict() for s in specs], indent=2))
        return 0
    if not specs:
        print("no instances yet: add one with `koboldtui instance add NAME --port P`")
        return 0
    rows = [
        (
            "NAME",
            "PORT",
            "MODEL",
            "GPUS",
            "LAYERS",
            "CTX",
            "BATCH",
            "PAR",
            "HORDE",
            "AUTO",
            "RESTART",
            "KIND",
        )
    ]
    for s in specs:
        gpus = s.gpus if isinstance(s.gpus, str) else ",".join(s.gpus)
        serve = (
            (str(s.gpu_layers), str(s.ctx), str(s.batch_size), str(s.parallel))
            if s.kind == "serve"
            else ("-", "-", "-", "-")  # set in its own command line, or on its own box
        )
        rows.append(
            (
                s.name,
                str(s.port),
                model_cell(s),
                "remote" if s.is_remote else gpus,
                *serve,
                "on" if s.horde.enabled else "off",
                "yes" if s.autostart else "no",
                s.restart,
                kind_label(s),
            )
        )
    _print_table(rows)
    return 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


# -- start / stop / ps / logs --------------------------------------------------------------


def _progress(snap: InstanceSnapshot) -> None:
    words = {
        InstanceState.STARTING: f"starting {snap.name} on port {snap.port} (pid {snap.pid})",
        InstanceState.LOADING: f"{snap.name}: loading the model",
        InstanceState.READY: f"{snap.name}: ready",
    }
    if snap.state in words:
        print(words[snap.state], file=sys.stderr, flush=True)


@_guarded
def cmd_start(args: argparse.Namespace) -> int:
    """Start an instance detached, wait until it answers, and return (it keeps running)."""
    paths, store = _open()
    supervisor = Supervisor(paths, store)
    supervisor.spec(args.name)
    if store.launch(args.name) is not None and args.name in supervisor.reattach():
        snap = supervisor.snapshot(args.name)
        print(
            f"{args.name} is already running on port {snap.port} (pid {snap.pid}, {snap.state.value})"
        )
        return 0
    supervisor.start(args.name)
    if args.no_wait:
        snap = supervisor.snapshot(args.name)
        print(f"started {args.name} (pid {snap.pid}); `koboldtui ps` shows when it is ready")
        return 0
    began = time.monotonic()
    try:
        snap = supervisor.wait_ready(args.name, timeout_s=args.timeout, progress=_progress)
    except KeyboardInterrupt:
        print(
            f"\n{args.name} keeps starting in the background: `koboldtui ps` shows it, "
            f"`koboldtui stop {args.name}` stops it",
            file=sys.stderr,
        )
        return 130
    spec = supervisor.spec(args.name)
    print(
        f"{args.name} is ready at {spec.base_url()} (pid {snap.pid}, "
        f"{time.monotonic() - began:.1f} s); logs: koboldtui logs {args.name}"
    )
    return 0


@_guarded
def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a running instance, wherever it was started from."""
    paths, store = _open()
    supervisor = Supervisor(paths, store)
    supervisor.spec(args.name)
    supervisor.reattach()
    # always through stop: it leaves a "stopped by user" mark even when nothing runs, so a
    # `koboldtui up` (or the panel) waiting to restart it after a crash keeps it stopped
    report = supervisor.stop_report(args.name, grace_s=args.timeout)
    if report.stopped_pid is not None:
        print(f"stopped {args.name} (pid {report.stopped_pid})")
    elif report.cancelled_restart:
        print(f"{args.name} was waiting to restart after a crash; it will stay stopped")
    else:
        print(f"{args.name} is not running")
    return 0


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


REMOTE_LOOK_WAIT_S = 0.15  # `ps` waits at most this long in all for remote instances


@_guarded
def cmd_ps(args: argparse.Namespace) -> int:
    """Show every instance: state, port, pid, restarts, uptime, last error."""
    paths, store = _open()
    supervisor = Supervisor(paths, store)
    supervisor.reattach()
    # remote instances are looked at in the background: a quick answer is shown fresh,
    # a silent server shows the last look any controller took (never a wait per remote)
    supervisor.look_at_remotes(wait_s=REMOTE_LOOK_WAIT_S)
    snaps = supervisor.snapshots()
    facts = [supervisor_facts(supervisor, s) for s in snaps]
    vram = instance_vram(snaps)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **s.to_dict(),
                        "vram_mib": vram_mib(vram, s.name),
                        "facts": f.to_dict() if f is not None else None,
                    }
                    for s, f in zip(snaps, facts)
                ],
                indent=2,
            )
        )
        return 0
    if not snaps:
        print("no instances yet: add one with `koboldtui instance add NAME --port P`")
        return 0
    rows = [
        ("NAME", "STATE", "PORT", "PID", "MODEL", "GPUS", "VRAM", "RESTARTS", "UPTIME", "LAST ERROR",
         "SERVES")
    ]
    for s, f in zip(snaps, facts):
        error = (s.last_error or "").splitlines()[0] if s.last_error else ""
        rows.append(
            (
                s.name,
                s.state.value,
                str(s.port),
                str(s.pid or "-"),
                ps_model_cell(supervisor.spec(s.name), f, s.model),
                s.gpus,
                vram_cell(vram, s.name),
                str(s.restarts),
                _uptime(s.uptime_s),
                error[:60],
                facts_cell(f),
            )
        )
    _print_table(rows)
    return 0


@_guarded
def cmd_logs(args: argparse.Namespace) -> int:
    """Print an instance's log (``-f`` keeps following it)."""
    paths, store = _open()
    InstanceRegistry(store, paths).get(args.name)
    path = logfiles.log_path_for(paths.log_dir, args.name)
    if not path.exists():
        return _fail(f"{args.name!r} has no log yet ({path}): it has never been started")
    if not args.follow:
        for line in logfiles.tail_lines(path, args.lines):
            print(line)
        return 0
    try:
        for line in logfiles.follow(path, start_lines=args.lines):
            print(line, flush=True)
    except KeyboardInterrupt:
        pass
    return 0


# -- up ------------------------------------------------------------------------------------


@_guarded
def cmd_up(args: argparse.Namespace) -> int:
    """Foreground supervisor: start the autostart instances, restart failures, stop all on SIGTERM/Ctrl-C."""
    paths, store = _open()
    registry = InstanceRegistry(store, paths)
    names = args.names or [s.name for s in registry.list() if s.autostart]
    for name in names:
        registry.get(name)
    stop_event = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_event.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_foreground(
            Supervisor(paths, store),
            names,
            stop_event=stop_event,
            interval_s=args.interval,
            say=_say,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

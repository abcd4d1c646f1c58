"""``koboldtui instance add|edit|rm|list``, ``start``, ``stop``, ``ps``, ``logs`` and ``up``: instances for scripts and headless servers.

The same ``koboldtui.control`` library the panel uses, so a script and the panel always
agree on what runs where.
"""

from __future__ import annotations

import argparse

from koboldtui.commands.instance_handlers import (
    API_KEY_ENV,
    HORDE_FLAGS,
    HORDE_KEY_ENV,
    SPEC_FLAGS,
    cmd_add,
    cmd_edit,
    cmd_list,
    cmd_logs,
    cmd_ps,
    cmd_rm,
    cmd_start,
    cmd_stop,
    cmd_up,
)

__all__ = [
    "API_KEY_ENV",
    "HORDE_FLAGS",
    "HORDE_KEY_ENV",
    "SPEC_FLAGS",
    "cmd_add",
    "cmd_edit",
    "cmd_list",
    "cmd_logs",
    "cmd_ps",
    "cmd_rm",
    "cmd_start",
    "cmd_stop",
    "cmd_up",
    "register",
]

# -- argument parsing ----------------------------------------------------------------------


def _spec_arguments(parser: argparse.ArgumentParser, *, editing: bool) -> None:
    p = parser.add_argument
    p("--model", help="path to a .gguf file, a catalogue name, or 'bundled' (default)")
    p("--host", help="address to listen on (default 127.0.0.1)")
    p("--port", type=int, help="HTTP port of this instance (required unless --url)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--cmd",
        help='run any server command line instead of `koboldtui serve`: "koboldcpp --port {port} '
        '--model {model} ..." ({port}, {model}, {host} are filled in)',
    )
    kind.add_argument(
        "--url",
        help="watch a server koboldtui does not start (http://host:port, e.g. another box "
        "or an SSH tunnel); --api-key is sent to it",
    )
    p(
        "--health",
        help="readiness path of a --cmd server (default: the first of /health, "
        "/api/extra/version, /v1/models, /sdapi/v1/sd-models, / that answers 200)",
    )
    gpus = parser.add_mutually_exclusive_group()
    gpus.add_argument("--cpu", action="store_true", help="run on the CPU only (hide every GPU)")
    gpus.add_argument("--gpus", help="'auto' (enabled GPUs by priority) or a list of indices/UUIDs")
    p("--gpu-layers", type=int, help="layers to offload to the GPUs (-1 = all)")
    p("--ctx", type=int, help="context tokens per request (each parallel slot gets this much)")
    p("--batch-size", type=int, help="BLAS batch size (n_batch)")
    p("--parallel", type=int, help="sequence slots decoded together")
    p("--threads", type=int, help="CPU threads (default: physical cores)")
    p("--max-queue", type=int, help="requests that may wait for a slot")
    auto = parser.add_mutually_exclusive_group()
    auto.add_argument(
        "--autostart",
        dest="autostart",
        action="store_true",
        default=None,
        help="start with `koboldtui up` and the panel",
    )
    if editing:
        auto.add_argument("--no-autostart", dest="autostart", action="store_false")
    p("--restart", choices=("no", "on-failure"), help="restart after a crash (with backoff)")
    p("--alias", help="model name for the gateway (default: the model file's stem); "
      "instances with the same alias form a pool")
    p("--ttl", dest="ttl_min", type=float, help="minutes idle before the gateway stops it, "
      "when the gateway started it (0 = never)")
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--pin", dest="pin", action="store_true", default=None,
                     help="the gateway never stops it (TTL, making room)")
    if editing:
        pin.add_argument("--no-pin", dest="pin", action="store_false")
    p(
        "--env",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra environment (repeatable)",
    )
    p("--api-key", default=None, help=f"key clients must send (or env {API_KEY_ENV}); '' clears it")
    horde = parser.add_mutually_exclusive_group()
    horde.add_argument(
        "--horde",
        dest="horde",
        action="store_true",
        default=None,
        help="lend idle capacity to the AI Horde",
    )
    if editing:
        horde.add_argument("--no-horde", dest="horde", action="store_false")
    p("--horde-name", help="Horde worker name")
    p(
        "--horde-key",
        default=None,
        help=f"Horde API key (or env {HORDE_KEY_ENV}); stored with mode 0600",
    )
    p("--horde-url", help="Horde API URL")
    p("--horde-window", type=float, help="seconds the worker pauses after each local request")
    p("--horde-threads", type=int, help="Horde jobs in parallel (0: every spare slot, the default)")
    p("--horde-max-length", type=int, help="longest Horde generation in tokens")
    p("--horde-model-name", help="model name advertised to the Horde")
    p("--horde-bridge-agent", help="bridge agent advertised to the Horde")
    for flag, dest in (("--horde-nsfw", "horde_nsfw"), ("--horde-preempt", "horde_preempt")):
        group = parser.add_mutually_exclusive_group()
        group.add_argument(flag, dest=dest, action="store_true", default=None)
        if editing:
            group.add_argument("--no-" + flag[2:], dest=dest, action="store_false")


# -- registration --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``instance``, ``start``, ``stop``, ``ps``, ``logs`` and ``up`` to the CLI."""
    inst = subparsers.add_parser("instance", help="add, edit, remove or list saved instances")
    inst_sub = inst.add_subparsers(dest="instance_command", metavar="ACTION", required=True)
    add = inst_sub.add_parser("add", help="save a new instance")
    add.add_argument("name")
    _spec_arguments(add, editing=False)
    add.set_defaults(handler=cmd_add)
    edit = inst_sub.add_parser("edit", help="change a saved instance")
    edit.add_argument("name")
    _spec_arguments(edit, editing=True)
    edit.set_defaults(handler=cmd_edit)
    rm = inst_sub.add_parser("rm", help="delete a saved instance")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true", help="stop it first if it runs")
    rm.set_defaults(handler=cmd_rm)
    lst = inst_sub.add_parser("list", help="list saved instances")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=cmd_list)

    start = subparsers.add_parser(
        "start", help="start an instance in the background and wait until ready"
    )
    start.add_argument("name")
    start.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for ready")
    start.add_argument("--no-wait", action="store_true", help="return once the process is spawned")
    start.set_defaults(handler=cmd_start)
    stop = subparsers.add_parser("stop", help="stop a running instance")
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float, default=15.0, help="seconds before SIGKILL")
    stop.set_defaults(handler=cmd_stop)
    ps = subparsers.add_parser("ps", help="show instances and their state")
    ps.add_argument("--json", action="store_true", help="machine-readable list")
    ps.set_defaults(handler=cmd_ps)
    logs = subparsers.add_parser("logs", help="print an instance's log")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=50, help="lines to show first")
    logs.set_defaults(handler=cmd_logs)
    up = subparsers.add_parser(
        "up", help="run the autostart instances in the foreground, restarting failures"
    )
    up.add_argument("names", nargs="*", help="instances to run (default: those marked --autostart)")
    up.add_argument("--interval", type=float, default=0.5, help="seconds between health checks")
    up.set_defaults(handler=cmd_up)

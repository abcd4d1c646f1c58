"""``koboldtui gateway``: one address for every model on the box (run, use, status, enable, disable).

``gateway`` runs it in the foreground. ``gateway enable`` saves it as a supervised command
instance named ``gateway`` (``--restart on-failure --autostart``), so ``koboldtui up`` and
the panel run it like any instance: it survives the panel and a dropped SSH session,
logs to its own file and restarts with backoff; ``koboldtui start gateway`` starts it now.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from typing import Any

import httpx

from koboldtui.paths import app_paths

GATEWAY_INSTANCE = "gateway"
DEFAULT_GATEWAY_PORT = 5000
PORT_SETTING = "gateway.port"
KEY_ENV = "KOBOLDTUI_GATEWAY_KEY"


def _fail(message: str) -> int:
    print(f"koboldtui: error: {message}", file=sys.stderr)
    return 1


def _conn() -> Any:
    from koboldtui.store.db import open_database

    return open_database(app_paths().ensure().database)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway in the foreground until Ctrl-C / SIGTERM."""
    from koboldtui.gateway.app import GatewayConfig
    from koboldtui.store.settings import set_setting

    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        return _fail(f"--host {args.host} lets other machines reach every model on this box: give it a key "
                     f"with --api-key KEY (or env {KEY_ENV}), or keep the default 127.0.0.1")
    config = GatewayConfig(host=args.host, port=args.port, api_key=api_key,
                           admin_password=args.admin_password, allow_hosts=tuple(args.allow_host or ()),
                           allow_origins=tuple(args.allow_origin or ("*",)))
    with contextlib.suppress(Exception):
        set_setting(_conn(), PORT_SETTING, args.port)  # so `gateway status` finds it
    return asyncio.run(_serve(config, args.wait, args.balance))


async def _serve(config: Any, wait_s: float, balance: str = "affinity") -> int:
    import uvicorn

    from koboldtui.api.header_timeout import KEEP_ALIVE_S, MAX_HEADER_BYTES, HeaderTimeoutH11Protocol
    from koboldtui.gateway.app import build_gateway_app
    from koboldtui.gateway.service import GatewayOptions
    from koboldtui.gateway.wiring import make_gateway

    options = GatewayOptions(round_robin=balance == "round-robin")
    gateway = make_gateway(app_paths(), wait_s=wait_s, options=options)
    server = uvicorn.Server(uvicorn.Config(
        build_gateway_app(gateway, config), host=config.host, port=config.port, log_level="warning",
        access_log=False, lifespan="on", timeout_graceful_shutdown=5, http=HeaderTimeoutH11Protocol,
        timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    print(f"koboldtui gateway on http://{config.host}:{config.port} "
          f"(models: {', '.join(gateway.table.known_names()) or 'none saved yet'})", flush=True)
    await server.serve()
    return 0


def cmd_use(args: argparse.Namespace) -> int:
    """Make NAME the current model (KoboldAI routes go there); a running gateway sees it within seconds."""
    from koboldtui.gateway.current_model import UnknownModelName, use_model

    paths = app_paths().ensure()
    try:
        use_model(_conn(), paths.secrets_file, args.name)
    except UnknownModelName as exc:
        return _fail(str(exc))
    print(f"current model: {args.name}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running gateway how it routes (its /api/koboldtui/gateway)."""
    from koboldtui.store.settings import get_setting

    port = args.port or get_setting(_conn(), PORT_SETTING, DEFAULT_GATEWAY_PORT)
    url = f"http://127.0.0.1:{port}/api/koboldtui/gateway"
    key = os.environ.get(KEY_ENV)
    try:
        response = httpx.get(url, timeout=5, trust_env=False,
                             headers={"Authorization": f"Bearer {key}"} if key else {})
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _fail(f"no gateway answers on port {port} ({exc}): start it with `koboldtui gateway`")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"gateway http://127.0.0.1:{port}  current model: {body['current_model'] or '-'}")
    share = body["routing"]["share"]
    for inst in body["instances"]:
        owner = "gateway" if inst["started_by_gateway"] else "-"
        print(f"  {inst['name']:<16} pool {inst['alias']:<16} {inst['state']:<11} in flight "
              f"{inst['in_flight']:<3} share {share.get(inst['name'], 0):>5.0%}  ttl "
              f"{inst['ttl_min']:g}m{' pinned' if inst['pin'] else ''}  started by {owner}")
    r = body["routing"]
    print(f"  affinity hits {r['affinity_hits']}  retries {r['retries']}  5xx {r['errors_5xx']}  starts "
          f"{body['starts']}  ttl stops {body['ttl_stops']}  room stops {body['room_stops']}")
    for line in body["last_errors"][-5:]:
        print(f"  error: {line}")
    return 0


def cmd_enable(args: argparse.Namespace) -> int:
    """Save the gateway as a supervised command instance (autostart, restart on failure)."""
    from koboldtui.control.spec import InstanceSpec
    from koboldtui.store.instances import InstanceStore, InstanceStoreError

    command = f"{shlex.quote(sys.executable)} -m koboldtui.cli gateway --port {{port}} --host {{host}}"
    spec = InstanceSpec(name=GATEWAY_INSTANCE, port=args.port, kind="command", command=command,
                        health="/health", autostart=True, restart="on-failure")
    spec_dict = spec.to_dict()
    store = InstanceStore(_conn())
    try:
        if store.find(GATEWAY_INSTANCE) is None:
            store.add(GATEWAY_INSTANCE, spec_dict)
        else:
            store.update(GATEWAY_INSTANCE, spec_dict)
    except InstanceStoreError as exc:
        return _fail(str(exc))
    print(f"the gateway is saved as instance {GATEWAY_INSTANCE!r} on port {args.port}: "
          f"`koboldtui start {GATEWAY_INSTANCE}` starts it now; `koboldtui up` and the panel keep it running")
    return 0


def cmd_disable(_: argparse.Namespace) -> int:
    """Forget the supervised gateway (stop it first with `koboldtui stop gateway`)."""
    from koboldtui.store.instances import InstanceStore, InstanceStoreError

    try:
        InstanceStore(_conn()).remove(GATEWAY_INSTANCE)
    except InstanceStoreError as exc:
        return _fail(str(exc))
    print("the gateway is no longer supervised")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``gateway`` and its actions."""
    gw = subparsers.add_parser("gateway", help="one address for every model on the box (routes by model)")
    gw.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT, help="port (default 5000)")
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    gw.add_argument("--api-key", default=None, help=f"key clients must send (or env {KEY_ENV})")
    gw.add_argument("--admin-password", default=None,
                    help="password for KoboldCpp's admin routes (model switching); the --api-key when set")
    gw.add_argument("--allow-host", action="append", help="extra Host names to answer (repeatable)")
    gw.add_argument("--allow-origin", action="append", help="browser origins allowed (default any)")
    gw.add_argument("--wait", type=float, default=120.0,
                    help="seconds a request waits for a stopped instance to load (then 503 + Retry-After)")
    gw.add_argument("--balance", choices=("affinity", "round-robin"), default="affinity",
                    help="how a pool's instances share requests (round-robin: for comparison)")
    gw.set_defaults(handler=cmd_run)
    actions = gw.add_subparsers(dest="gateway_command", metavar="ACTION")
    use = actions.add_parser("use", help="make an instance or pool the current model (KoboldAI routes)")
    use.add_argument("name")
    use.set_defaults(handler=cmd_use)
    status = actions.add_parser("status", help="how the running gateway routes")
    status.add_argument("--json", action="store_true")
    status.add_argument("--port", type=int, default=None)
    status.set_defaults(handler=cmd_status)
    enable = actions.add_parser("enable", help="run the gateway supervised (autostart, restart on failure)")
    enable.add_argument("--port", type=int, default=DEFAULT_GATEWAY_PORT)
    enable.set_defaults(handler=cmd_enable)
    disable = actions.add_parser("disable", help="stop supervising the gateway")
    disable.set_defaults(handler=cmd_disable)

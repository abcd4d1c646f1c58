"""``koboldtui serve``: one headless instance (engine + HTTP APIs + optional Horde worker).

Defaults come from the ``[serve]`` and ``[horde]`` tables of config.toml, then flags.
Secrets come from flags or the environment (KOBOLDTUI_API_KEY, KOBOLDTUI_HORDE_KEY) so a
supervisor never has to put them on a command line that ``ps`` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from koboldtui.config import DEFAULT_HORDE_URL, DEFAULT_PORT, HordeSettings, ServeConfig
from koboldtui.paths import app_paths
from koboldtui.stop_budget import ABORT_S, LOCAL_DRAIN_S

log = logging.getLogger("koboldtui.serve")


def _config_file_defaults() -> dict[str, Any]:
    """[serve] and [horde] tables of config.toml, flattened to argparse dests."""
    path = app_paths().config_file
    if not path.exists():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"config_problems": [f"cannot read {path}: {exc}; fix the file (other commands still work)"]}
    tables = {name: data.get(name, {}) for name in ("serve", "horde")}
    bad = [f"[{name}] must be a table" for name, table in tables.items() if not isinstance(table, dict)]
    if bad:
        return {"config_problems": [f"{path}: {b}" for b in bad]}
    out = {k.replace("-", "_"): v for k, v in dict(tables["serve"]).items()}
    out.update({"horde_" + k.replace("-", "_"): v for k, v in dict(tables["horde"]).items()})
    out.pop("horde_key", None)  # secrets never come from the plain config file
    return out


def _checked_defaults(parser: argparse.ArgumentParser, values: dict[str, Any]) -> dict[str, Any]:
    """Config-file defaults that are real ``serve`` options of the right type; the rest become
    problems ``serve`` reports (a bad key must not break every other command, nor replace
    argparse internals such as ``handler``)."""
    path = app_paths().config_file
    problems = list(values.pop("config_problems", []))
    options = {a.dest: a for a in parser._actions if a.dest not in ("help", "handler")}
    good: dict[str, Any] = {}
    for key, value in values.items():
        table, name = ("horde", key[6:]) if key.startswith("horde_") else ("serve", key)
        action = options.get(key)
        if action is None or key in ("launch_token", "config_problems"):
            problems.append(f"{path}: [{table}] {name} is not a setting; remove it (see "
                            "`koboldtui serve --help` for the options)")
            continue
        default = action.default
        kind = bool if isinstance(default, bool) else (float if isinstance(default, float) else
                                                       int if isinstance(default, int) else str)
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if default is None and action.type in (int, float):
            kind = action.type
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            words = {bool: "true or false", int: "a whole number", float: "a number"}.get(kind, "a string")
            problems.append(f"{path}: [{table}] {name} = {value!r} should be {words}")
            continue
        good[key] = value
    good["config_problems"] = problems
    return good


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run one model instance headless (KoboldAI + OpenAI APIs)",
                       description="Run one model instance with KoboldAI and OpenAI HTTP APIs.")
    p.add_argument("--model", help="path to a .gguf file (default: the bundled Gemma 3 270M)")
    p.add_argument("--name", default="default", help="instance name shown in status")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback by default)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--ctx", type=int, default=4096, help="context tokens per request")
    p.add_argument("--batch-size", type=int, default=512, help="BLAS batch size n_batch (n_ubatch = min(n_batch, 1024))")
    p.add_argument("--parallel", type=int, default=4, help="sequence slots served together")
    p.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU (GPU builds)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    p.add_argument("--tensor-split", default=None, help="split across GPUs, e.g. 3,1")
    p.add_argument("--main-gpu", type=int, default=0)
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or KOBOLDTUI_API_KEY)")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503")
    p.add_argument("--allow-origin", action="append", default=None, metavar="ORIGIN",
                   help="web origin allowed to call the API from a browser, e.g. https://lite.koboldai.net "
                   "(repeatable; default: any, as KoboldCpp)")
    p.add_argument("--allow-host", action="append", default=None, metavar="NAME",
                   help="Host name to answer besides the listen address and localhost (repeatable; *.lan works)")
    p.add_argument("--launch-token", default=None, help=argparse.SUPPRESS)
    p.add_argument("--queue-timeout", type=float, default=300.0,
                   help="seconds a request may wait for a free slot before a 503")
    p.add_argument("--drain-s", type=float, default=LOCAL_DRAIN_S,
                   help="on stop, seconds local requests may finish before they are aborted")
    h = p.add_argument_group("AI Horde worker")
    h.add_argument("--horde", action="store_true", help="lend idle capacity to the AI Horde")
    h.add_argument("--horde-key", default=None, help="AI Horde API key (or KOBOLDTUI_HORDE_KEY)")
    h.add_argument("--horde-name", default="", help="worker name, unique on the Horde")
    h.add_argument("--horde-url", default=DEFAULT_HORDE_URL)
    h.add_argument("--horde-window", type=float, default=20.0, help="local-priority window in seconds")
    h.add_argument("--horde-threads", type=int, default=0,
                   help="Horde jobs at once (default 0: every spare slot, parallel - 1; one slot stays for you)")
    h.add_argument("--horde-max-length", type=int, default=512)
    h.add_argument("--horde-model-name", default="", help="advertised model (default koboldcpp/<file>)")
    h.add_argument("--horde-bridge-agent", default="", help="bridge agent (default koboldtui:<version>:<url>)")
    h.add_argument("--horde-nsfw", action="store_true")
    h.add_argument("--horde-preempt", action="store_true", help="local requests may preempt Horde jobs")
    p.set_defaults(**_checked_defaults(p, _config_file_defaults()))
    p.set_defaults(handler=run_serve)


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServeConfig:
    env = os.environ if environ is None else environ
    horde_key = args.horde_key or env.get("KOBOLDTUI_HORDE_KEY", "")
    horde = HordeSettings(
        enabled=bool(args.horde or (args.horde_name and horde_key)), api_key=horde_key,
        worker_name=args.horde_name, url=args.horde_url, window_s=args.horde_window,
        threads=args.horde_threads, max_length=args.horde_max_length,
        model_name=args.horde_model_name, bridge_agent=args.horde_bridge_agent,
        nsfw=args.horde_nsfw, preempt=args.horde_preempt,
    )
    return ServeConfig(
        model=args.model, name=args.name, host=args.host, port=args.port, ctx=args.ctx,
        batch_size=args.batch_size, parallel=args.parallel, gpu_layers=args.gpu_layers,
        threads=args.threads, tensor_split=args.tensor_split, main_gpu=args.main_gpu,
        api_key=args.api_key or env.get("KOBOLDTUI_API_KEY") or None, max_queue=args.max_queue,
        launch_token=args.launch_token, drain_s=args.drain_s,
        queue_timeout_s=args.queue_timeout, horde=horde,
        allow_origins=tuple(getattr(args, "allow_origin", None) or ("*",)),
        allow_hosts=tuple(getattr(args, "allow_host", None) or ()),
    )


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: the Horde worker's routine pops (one every few seconds)
    # would bury the log. The worker logs its own jobs and errors; httpx only warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for problem in getattr(args, "config_problems", []):
        print(f"koboldtui serve: {problem}", file=sys.stderr)
    if getattr(args, "config_problems", []):
        return 2
    config = config_from_args(args)
    problems = config.validate()
    if problems:
        for problem in problems:
            print(f"koboldtui serve: {problem}", file=sys.stderr)
        return 2
    from koboldtui.models.bundled import BundledModelError, resolve_model_path

    try:
        model_path = resolve_model_path(config.model)
    except (OSError, ValueError, BundledModelError) as exc:
        print(f"koboldtui serve: {exc}", file=sys.stderr)
        return 2
    from koboldtui.control.ports import PortUnavailableError, check_port_available

    try:
        check_port_available(config.host, config.port)
    except PortUnavailableError as exc:
        print(f"koboldtui serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve_forever(config, model_path))


async def serve_forever(config: ServeConfig, model_path: Path) -> int:
    """Run uvicorn until SIGINT/SIGTERM; in-flight requests are aborted, the port released."""
    import uvicorn

    from koboldtui.api.app import build_app
    from koboldtui.api.fd_pressure import AcceptErrorLog
    from koboldtui.api.header_timeout import (
        KEEP_ALIVE_S,
        MAX_HEADER_BYTES,
        HeaderTimeoutH11Protocol,
    )
    from koboldtui.runtime import Runtime

    runtime = Runtime(config, model_path)
    app = build_app(runtime)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, log_level="warning", access_log=False,
        # past our own drain (requests end with finish reason "abort"), so uvicorn never
        # cancels a request (a 500, a stream cut without a finish reason)
        timeout_graceful_shutdown=config.drain_s + ABORT_S + 2, lifespan="on",
        # a half-sent request or an idle client cannot hold a connection for long
        http=HeaderTimeoutH11Protocol, timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    ))
    loop = asyncio.get_running_loop()
    AcceptErrorLog().install(loop)  # out of descriptors: one line per 10 s, not one per retry
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _request_exit, server, runtime)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    # uvicorn would capture the signals itself and re-raise them after shutdown (exit by
    # signal, traceback on Ctrl-C); our handlers above give a clean exit code instead.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    log.info("instance %s: model %s on http://%s:%d", config.name, model_path, config.host, config.port)
    await server.serve()
    return 1 if runtime.state == "failed" else 0


def _request_exit(server: Any, runtime: Any) -> None:
    """First signal: drain with the port open; another: hurry (abort now, fault Horde jobs)
    but still submit them, and close the port.

    The port stays open through the drain (local requests, Horde jobs in hand, freeing the
    model) so a new request gets the documented 503 "shutting down", not "connection
    refused"; uvicorn is told to exit once that work is done. Never uvicorn's ``force_exit``:
    it skips the lifespan shutdown, and with it the submit of every Horde job in hand.
    """
    if runtime.stopping:
        runtime.begin_stop()  # hurries
        server.should_exit = True
        return
    runtime.begin_stop()

    async def drain_then_exit() -> None:
        try:
            await runtime.shutdown()
        except Exception:  # noqa: BLE001 - the lifespan's own shutdown reports it
            log.exception("the stop did not finish cleanly")
        finally:
            server.should_exit = True

    _stopping.add(asyncio.get_running_loop().create_task(drain_then_exit()))


_stopping: set[asyncio.Task[None]] = set()  # keeps the drain task alive until it is done

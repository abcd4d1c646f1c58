"""``koboldtui horde``: watch and steer an instance's AI Horde worker from a shell.

Headless servers have no panel: these commands call the instance's own control routes
(``/api/koboldtui/status`` and ``/api/koboldtui/horde/*``), with its API key when it has one.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from koboldtui.control.registry import InstanceRegistry
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.faults import StorageError
from koboldtui.store.instances import InstanceStore, InstanceStoreError

WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("horde", help="the AI Horde worker of an instance: status, start, stop, maintenance",
                       description="Watch and steer the AI Horde worker of a running instance.")
    actions = p.add_subparsers(dest="horde_action", metavar="ACTION", required=True)

    def target(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", nargs="?", help="a saved instance (see `koboldtui ps`)")
        parser.add_argument("--url", help="an instance's address instead, e.g. http://127.0.0.1:5001")
        parser.add_argument("--api-key", help="the instance's API key (saved instances: read from secrets)")

    s = actions.add_parser("status", help="state, countdown, jobs, kudos, last error")
    target(s)
    s.add_argument("--json", action="store_true", help="the raw `horde` object")
    target(actions.add_parser("start", help="start the worker (the instance must have Horde settings)"))
    stop = actions.add_parser("stop", help="stop popping; finish jobs in hand (or fault them with --force)")
    target(stop)
    stop.add_argument("--force", action="store_true", help="submit jobs in hand as faulted now")
    m = actions.add_parser("maintenance", help="enter or clear Horde maintenance mode")
    target(m)
    m.add_argument("switch", choices=["on", "off"])
    m.add_argument("--message", default="", help="shown on the Horde while in maintenance")
    p.set_defaults(handler=run_horde)


def resolve_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """(base URL, API key) of the instance the command is about."""
    if args.url:
        return args.url.rstrip("/"), args.api_key
    if not args.name:
        raise LookupError("name a saved instance (see `koboldtui ps`) or pass --url")
    paths = app_paths().ensure()
    registry = InstanceRegistry(InstanceStore(open_database(paths.database)), paths)
    spec = registry.get(args.name)
    host = "127.0.0.1" if spec.host in WILDCARD_HOSTS else spec.host
    if ":" in host:
        host = f"[{host}]"
    key = args.api_key or registry.secrets.get(args.name).get("api_key")
    return f"http://{host}:{spec.port}", key


def _call(method: str, url: str, key: str | None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.request(method, url, json=body, headers=headers, timeout=30)
    try:
        data = response.json()
    except ValueError:
        data = {"error": response.text[:200]}
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            error = error.get("message")
        raise RuntimeError(str(error or f"HTTP {response.status_code}"))
    return data


def describe(h: dict[str, Any]) -> list[str]:
    """The worker's status in a few lines a person reads at a glance."""
    lines = [f"state      {h.get('state', '?')}"
             + (f"  ({h['worker_name']})" if h.get("worker_name") else "")]
    window, left = h.get("window_s", 0), h.get("remaining_s", 0)
    lines.append(f"priority   {'Horde waits ' + format(left, '.1f') + ' s' if left else 'open'}"
                 f" (window {window:g} s after each local request)")
    if "jobs_done" in h:
        lines.append(f"jobs       {h.get('jobs_done', 0)} done, {h.get('jobs_faulted', 0)} faulted, "
                     f"{h.get('jobs_dropped', 0)} dropped, {h.get('jobs_in_progress', 0)} in hand")
        lines.append(f"kudos      {h.get('kudos_session', 0):g} this session, "
                     f"{h.get('kudos_total') if h.get('kudos_total') is not None else '?'} total"
                     + (f"  user {h['username']}" if h.get("username") else ""))
        lines.append(f"speed      {h.get('tokens_per_s') or 0:.1f} tok/s")
    if h.get("skipped"):
        lines.append("skipped    " + ", ".join(f"{k} {v}" for k, v in h["skipped"].items()))
    if h.get("maintenance_message"):
        lines.append(f"maintenance {h['maintenance_message']}")
    if h.get("last_error"):
        age = h.get("last_error_age_s")
        lines.append(f"last error {h['last_error']}" + (f" ({age:.0f} s ago)" if age is not None else ""))
    drop = h.get("last_drop")
    if isinstance(drop, dict):
        lines.append(f"last drop  job {drop.get('id')}: {drop.get('reason')}")
    if h.get("state") == "stopping":
        eta = h.get("stop_eta_s")
        lines.append("stop ETA   " + (f"about {eta:.0f} s" if eta else "unknown (jobs still running)"))
    return lines


def stop_summary(data: dict[str, Any]) -> str:
    """What a stop does to the jobs in hand, in the words that match it (finish or fault)."""
    count = data["jobs_in_progress"]
    if data.get("forced"):
        return f"faulting {count} job(s) in hand (handed back to the Horde unfinished); no new ones will be taken"
    eta = data.get("eta_s")
    when = f", about {eta:.0f} s" if eta else ", time unknown"
    return f"finishing {count} job(s) in hand{when}; no new ones will be taken"


def run_horde(args: argparse.Namespace) -> int:
    try:
        base, key = resolve_target(args)
    except (LookupError, InstanceStoreError, StorageError) as exc:  # a damaged/full/odd file: one line
        print(f"koboldtui horde: {exc}", file=sys.stderr)
        return 1
    try:
        if args.horde_action == "status":
            horde = _call("GET", base + "/api/koboldtui/status", key).get("horde", {})
            print(json.dumps(horde, indent=2) if args.json else "\n".join(describe(horde)))
            return 0
        if args.horde_action == "start":
            data = _call("POST", base + "/api/koboldtui/horde/start", key, {})
        elif args.horde_action == "stop":
            data = _call("POST", base + "/api/koboldtui/horde/stop", key, {"force": args.force})
            if data.get("jobs_in_progress"):
                print(stop_summary(data))
        else:
            data = _call("POST", base + "/api/koboldtui/horde/maintenance", key,
                         {"on": args.switch == "on", "message": args.message})
    except httpx.HTTPError:
        print(f"koboldtui horde: nothing answers at {base}: is the instance running? "
              "(`koboldtui ps`, `koboldtui start NAME`)", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"koboldtui horde: {exc}", file=sys.stderr)
        return 1
    print("\n".join(describe(data.get("horde", {}))))
    return 0

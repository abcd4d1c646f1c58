"""`koboldtui gpus` and `koboldtui models`: see and order the GPUs, list the models, from a shell or a script.

Headless servers have no panel, so the GPU priority and the model catalogue are reachable
here too; ``--json`` output is the stable shape for scripts.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from typing import Any

from koboldtui.gpu.nvml import GpuInventory, GpuSnapshot, read_inventory
from koboldtui.gpu.priority import resolve_ref
from koboldtui.models.catalog import (
    CatalogEntry,
    add_model_dir,
    list_models,
    model_dirs,
    remove_model_dir,
)
from koboldtui.store.db import DatabaseError, default_database
from koboldtui.store.gpus import (
    GpuRow,
    UnknownGpuError,
    list_gpus,
    move,
    reconcile,
    set_enabled,
    set_order,
)

GiB = 1024**3


def register(subparsers: Any) -> None:
    """Add the `gpus` and `models` subcommands to the CLI."""
    gpus = subparsers.add_parser("gpus", help="GPUs: live VRAM, priority order, enable/disable")
    gpus.add_argument("--json", action="store_true", help="machine-readable output")
    gpus.set_defaults(handler=_gpus_list)
    actions = gpus.add_subparsers(dest="gpus_action", metavar="ACTION")
    order = actions.add_parser("order", help="set the priority order (first = main GPU)")
    order.add_argument("refs", nargs="+", metavar="UUID|INDEX")
    order.set_defaults(handler=_gpus_order)
    for name, helptext in (
        ("enable", "let instances use this GPU"),
        ("disable", "keep instances off this GPU"),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("ref", metavar="UUID|INDEX")
        p.set_defaults(handler=_gpus_enable, enable=name == "enable")
    for name, delta in (("up", -1), ("down", 1)):
        p = actions.add_parser(name, help=f"move a GPU one place {name} in the priority order")
        p.add_argument("ref", metavar="UUID|INDEX")
        p.set_defaults(handler=_gpus_move, delta=delta)

    models = subparsers.add_parser(
        "models", help="the model catalogue: GGUF files koboldtui can run"
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(handler=_models_list)
    mactions = models.add_subparsers(dest="models_action", metavar="ACTION")
    add = mactions.add_parser("add-dir", help="also look for .gguf files in this folder")
    add.add_argument("path")
    add.set_defaults(handler=_models_add_dir)
    rm = mactions.add_parser("rm-dir", help="stop looking in this folder")
    rm.add_argument("path")
    rm.set_defaults(handler=_models_rm_dir)
    dirs = mactions.add_parser("dirs", help="list the folders searched for models")
    dirs.set_defaults(handler=_models_dirs)


def _fail(message: str) -> int:
    print(f"koboldtui: {message}", file=sys.stderr)
    return 1


def _our_pids(conn: sqlite3.Connection) -> set[int]:
    """Pids of instances koboldtui launched, so their GPU processes are marked as ours."""
    try:
        return {int(r[0]) for r in conn.execute("SELECT pid FROM launches WHERE pid IS NOT NULL")}
    except sqlite3.Error:
        return set()


def _load(conn: sqlite3.Connection) -> tuple[GpuInventory, list[GpuRow]]:
    inventory = read_inventory(_our_pids(conn))
    if inventory.available and inventory.gpus:
        reconcile(conn, [(g.uuid, g.name) for g in inventory.gpus])
    return inventory, list_gpus(conn)


def _with_db(fn: Any) -> Any:
    def wrapper(args: argparse.Namespace) -> int:
        try:
            conn = default_database()
        except DatabaseError as exc:
            return _fail(str(exc))
        try:
            return int(fn(args, conn) or 0)
        except (UnknownGpuError, ValueError) as exc:
            return _fail(str(exc).strip("'\""))
        finally:
            conn.close()

    return wrapper


def _gpu_json(gpu: GpuSnapshot | None, row: GpuRow | None) -> dict[str, Any]:
    uuid = gpu.uuid if gpu else row.uuid if row else ""
    return {
        "index": gpu.index if gpu else None,
        "uuid": uuid,
        "name": (gpu.name if gpu else None) or (row.name if row else None),
        "pci_bus_id": gpu.pci_bus_id if gpu else None,
        "present": gpu is not None,
        "memory_total": gpu.memory_total if gpu else None,
        "memory_used": gpu.memory_used if gpu else None,
        "memory_free": gpu.memory_free if gpu else None,
        "utilization": gpu.utilization_gpu if gpu else None,
        "utilization_memory": gpu.utilization_memory if gpu else None,
        "temperature": gpu.temperature_c if gpu else None,
        "power_draw_w": gpu.power_draw_w if gpu else None,
        "power_limit_w": gpu.power_limit_w if gpu else None,
        "fan": gpu.fan_percent if gpu else None,
        "priority": row.priority if row else None,
        "enabled": row.enabled if row else True,
        "processes": [
            {"pid": p.pid, "used_memory": p.used_memory, "ours": p.is_ours}
            for p in (gpu.processes if gpu else ())
        ],
    }


def _ordered(
    inventory: GpuInventory, rows: list[GpuRow]
) -> list[tuple[GpuSnapshot | None, GpuRow | None]]:
    """Remembered GPUs in priority order, then any the store does not know (none after reconcile)."""
    pairs: list[tuple[GpuSnapshot | None, GpuRow | None]] = [
        (inventory.by_uuid(r.uuid), r) for r in rows
    ]
    known = {r.uuid for r in rows}
    pairs += [(g, None) for g in inventory.gpus if g.uuid not in known]
    return pairs


def _num(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _gpus_table(inventory: GpuInventory, rows: list[GpuRow]) -> str:
    if not inventory.available or not inventory.gpus:
        lines = [f"No GPUs: {inventory.reason}."]
        if rows:
            lines.append(
                "Remembered GPUs (absent now, they keep their place): "
                + ", ".join(r.uuid for r in rows)
            )
        return "\n".join(lines)
    header = (
        "#",
        "IDX",
        "NAME",
        "MEMORY (used/total)",
        "FREE",
        "UTIL",
        "TEMP",
        "POWER",
        "PROCS",
        "STATE",
        "UUID",
    )
    table = [header]
    for rank, (gpu, row) in enumerate(_ordered(inventory, rows), start=1):
        state = ("enabled" if (row is None or row.enabled) else "disabled") + (
            "" if gpu else ", absent"
        )
        if gpu is None:
            table.append(
                (
                    str(rank),
                    "-",
                    (row.name if row else None) or "?",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    state,
                    row.uuid if row else "?",
                )
            )
            continue
        mem = (
            "-"
            if gpu.memory_total is None
            else f"{(gpu.memory_used or 0) / GiB:.1f}/{gpu.memory_total / GiB:.1f} GiB"
        )
        power = (
            "-"
            if gpu.power_draw_w is None
            else (
                f"{gpu.power_draw_w:.0f}/{gpu.power_limit_w:.0f} W"
                if gpu.power_limit_w
                else f"{gpu.power_draw_w:.0f} W"
            )
        )
        ours = sum(1 for p in gpu.processes if p.is_ours)
        procs = f"{len(gpu.processes)}" + (f" ({ours} ours)" if ours else "")
        table.append(
            (
                str(rank),
                str(gpu.index),
                gpu.name or "?",
                mem,
                _num(gpu.memory_free and gpu.memory_free / GiB, "{:.1f} GiB"),
                _num(gpu.utilization_gpu, "{}%"),
                _num(gpu.temperature_c, "{}°C"),
                power,
                procs,
                state,
                gpu.uuid,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    out.append(
        f"NVIDIA driver {inventory.driver or 'unknown'}; # = priority (instances with --gpus auto use them in this order)"
    )
    return "\n".join(out)


@_with_db
def _gpus_list(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    inventory, rows = _load(conn)
    if args.json:
        payload = {
            "nvml": {
                "available": inventory.available,
                "reason": inventory.reason,
                "driver": inventory.driver,
            },
            "gpus": [_gpu_json(g, r) for g, r in _ordered(inventory, rows)],
        }
        print(json.dumps(payload, indent=2))
    else:
        print(_gpus_table(inventory, rows))
    return 0


@_with_db
def _gpus_order(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    inventory, rows = _load(conn)
    uuids = [resolve_ref(ref, rows, inventory) for ref in args.refs]
    rows = set_order(conn, uuids)
    print(_gpus_table(inventory, rows))
    return 0


@_with_db
def _gpus_enable(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    inventory, rows = _load(conn)
    uuid = resolve_ref(args.ref, rows, inventory)
    if uuid not in {r.uuid for r in rows}:
        raise UnknownGpuError(
            f"GPU {uuid} is not in the priority list yet: run `koboldtui gpus` with NVML working"
        )
    row = set_enabled(conn, uuid, args.enable)
    print(f"{row.name or row.uuid} ({row.uuid}) is now {'enabled' if row.enabled else 'disabled'}")
    return 0


@_with_db
def _gpus_move(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    inventory, rows = _load(conn)
    uuid = resolve_ref(args.ref, rows, inventory)
    print(_gpus_table(inventory, move(conn, uuid, args.delta)))
    return 0


def _models_table(entries: list[CatalogEntry]) -> str:
    header = ("NAME", "QUANT", "ARCH", "CTX", "LAYERS", "SIZE", "PATH")
    table = [header]
    problems = []
    for e in entries:
        if e.error:
            problems.append(f"  {e.name}: {e.error}")
            table.append(
                (
                    e.name,
                    "-",
                    "-",
                    "-",
                    "-",
                    _num(e.size and e.size / GiB, "{:.2f} GiB"),
                    f"{e.path or '-'} (broken)",
                )
            )
            continue
        table.append(
            (
                e.name,
                e.quantization or "-",
                e.architecture or "-",
                _num(e.context_length),
                _num(e.layers),
                _num(e.size and e.size / GiB, "{:.2f} GiB"),
                str(e.path),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    if problems:
        out += ["", "Skipped:", *problems]
    return "\n".join(out)


@_with_db
def _models_list(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    entries = list_models(conn)
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
    else:
        print(_models_table(entries))
    return 0


@_with_db
def _models_add_dir(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    path = add_model_dir(conn, args.path)
    print(f"added {path}; `koboldtui models` now lists the .gguf files in it")
    return 0


@_with_db
def _models_rm_dir(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    if not remove_model_dir(conn, args.path):
        return _fail(
            f"{args.path} is not one of the model folders; `koboldtui models dirs` lists them"
        )
    print(f"removed {args.path} from the model folders (its files are untouched)")
    return 0


@_with_db
def _models_dirs(args: argparse.Namespace, conn: sqlite3.Connection) -> int:
    for folder in model_dirs(conn):
        print(folder)
    return 0

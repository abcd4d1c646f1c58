"""The user's GPU order, kept by UUID so it survives reboots, re-cabling and GPUs that come and go."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from koboldtui.store.db import transaction


@dataclass(frozen=True)
class GpuRow:
    """One remembered GPU: its place in the priority order, whether instances may use it."""

    uuid: str
    priority: int  # 0 = first choice
    enabled: bool
    name: str | None
    present: bool  # seen at the last reconcile
    last_seen: float | None


class UnknownGpuError(LookupError):
    """A GPU reference that matches no remembered GPU; the message lists what exists."""


def _row(r: sqlite3.Row) -> GpuRow:
    return GpuRow(
        r["uuid"],
        int(r["priority"]),
        bool(r["enabled"]),
        r["name"],
        bool(r["present"]),
        r["last_seen"],
    )


def list_gpus(conn: sqlite3.Connection) -> list[GpuRow]:
    """Every remembered GPU in priority order (absent ones included, so they keep their place)."""
    rows = conn.execute("SELECT * FROM gpus ORDER BY priority, uuid").fetchall()
    return [_row(r) for r in rows]


def get_gpu(conn: sqlite3.Connection, uuid: str) -> GpuRow | None:
    """The row for ``uuid``, if remembered."""
    r = conn.execute("SELECT * FROM gpus WHERE uuid = ?", (uuid,)).fetchone()
    return _row(r) if r is not None else None


def reconcile(
    conn: sqlite3.Connection,
    seen: Iterable[tuple[str, str | None]],
    clock: Callable[[], float] = time.time,
) -> list[GpuRow]:
    """Merge the GPUs present now (``(uuid, name)`` in NVML index order) into the stored order.

    New GPUs go to the end; remembered ones not seen are kept but marked absent, so a GPU
    that comes back keeps its place. Call it only with a working NVML: an unavailable
    NVML says nothing about which GPUs exist.
    """
    now = clock()
    seen_list = list(seen)
    with transaction(conn):
        known = {r["uuid"] for r in conn.execute("SELECT uuid FROM gpus")}
        row = conn.execute("SELECT MAX(priority) FROM gpus").fetchone()
        next_priority = -1 if row[0] is None else int(row[0])
        seen_uuids = set()
        for uuid, name in seen_list:
            seen_uuids.add(uuid)
            if uuid in known:
                conn.execute(
                    "UPDATE gpus SET present = 1, last_seen = ?, name = COALESCE(?, name) WHERE uuid = ?",
                    (now, name, uuid),
                )
            else:
                next_priority += 1
                conn.execute(
                    "INSERT INTO gpus (uuid, priority, enabled, name, present, last_seen) "
                    "VALUES (?, ?, 1, ?, 1, ?)",
                    (uuid, next_priority, name, now),
                )
                known.add(uuid)
        for uuid in known - seen_uuids:
            conn.execute("UPDATE gpus SET present = 0 WHERE uuid = ?", (uuid,))
    return list_gpus(conn)


def _renumber(conn: sqlite3.Connection, ordered: Sequence[str]) -> None:
    for priority, uuid in enumerate(ordered):
        conn.execute("UPDATE gpus SET priority = ? WHERE uuid = ?", (priority, uuid))


def _require(conn: sqlite3.Connection, uuid: str) -> None:
    if get_gpu(conn, uuid) is None:
        known = ", ".join(r.uuid for r in list_gpus(conn)) or "none"
        raise UnknownGpuError(
            f"no GPU with UUID {uuid} is known (known: {known}); run `koboldtui gpus` to list them"
        )


def set_order(conn: sqlite3.Connection, uuids: Sequence[str]) -> list[GpuRow]:
    """Put ``uuids`` first, in this order; every other GPU follows in its old relative order."""
    if len(set(uuids)) != len(uuids):
        raise ValueError("a GPU is named twice in the new order: name each GPU once")
    with transaction(conn):
        for uuid in uuids:
            _require(conn, uuid)
        rest = [r.uuid for r in list_gpus(conn) if r.uuid not in set(uuids)]
        _renumber(conn, [*uuids, *rest])
    return list_gpus(conn)


def move(conn: sqlite3.Connection, uuid: str, delta: int) -> list[GpuRow]:
    """Move a GPU ``delta`` places (-1 = up = higher priority), clamped at the ends."""
    with transaction(conn):
        _require(conn, uuid)
        order = [r.uuid for r in list_gpus(conn)]
        old = order.index(uuid)
        new = max(0, min(len(order) - 1, old + delta))
        order.insert(new, order.pop(old))
        _renumber(conn, order)
    return list_gpus(conn)


def move_up(conn: sqlite3.Connection, uuid: str) -> list[GpuRow]:
    """One place higher in priority."""
    return move(conn, uuid, -1)


def move_down(conn: sqlite3.Connection, uuid: str) -> list[GpuRow]:
    """One place lower in priority."""
    return move(conn, uuid, +1)


def set_enabled(conn: sqlite3.Connection, uuid: str, enabled: bool) -> GpuRow:
    """Let instances use this GPU (``auto`` selection) or keep them off it."""
    with transaction(conn):
        _require(conn, uuid)
        conn.execute("UPDATE gpus SET enabled = ? WHERE uuid = ?", (1 if enabled else 0, uuid))
    row = get_gpu(conn, uuid)
    assert row is not None
    return row


def forget(conn: sqlite3.Connection, uuid: str) -> None:
    """Drop a GPU from memory (e.g. an absent card sold long ago); the rest close ranks."""
    with transaction(conn):
        _require(conn, uuid)
        conn.execute("DELETE FROM gpus WHERE uuid = ?", (uuid,))
        _renumber(conn, [r.uuid for r in list_gpus(conn)])

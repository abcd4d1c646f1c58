"""The GPU priority order is kept by UUID in SQLite and survives restarts and GPUs that come and go."""

from __future__ import annotations

from pathlib import Path

import pytest

from koboldtui.store.db import open_database
from koboldtui.store.gpus import (
    UnknownGpuError,
    forget,
    get_gpu,
    list_gpus,
    move_down,
    move_up,
    reconcile,
    set_enabled,
    set_order,
)

A, B, C, D = "GPU-a", "GPU-b", "GPU-c", "GPU-d"


def order(conn) -> list[str]:
    return [r.uuid for r in list_gpus(conn)]


def clock_at(t: float):
    return lambda: t


def test_first_reconcile_keeps_nvml_order_and_enables_all(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    rows = reconcile(conn, [(A, "RTX 4090"), (B, "RTX 3070")], clock=clock_at(100.0))
    assert [(r.uuid, r.priority, r.enabled, r.present, r.name, r.last_seen) for r in rows] == [
        (A, 0, True, True, "RTX 4090", 100.0),
        (B, 1, True, True, "RTX 3070", 100.0),
    ]


def test_order_persists_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "k.sqlite3"
    conn = open_database(path)
    reconcile(conn, [(A, None), (B, None), (C, None)])
    set_order(conn, [C, A])
    set_enabled(conn, B, False)
    conn.close()

    conn = open_database(path)  # a new process/panel start
    rows = reconcile(conn, [(A, None), (B, None), (C, None)])  # NVML still lists them in bus order
    assert [r.uuid for r in rows] == [C, A, B]
    assert [r.enabled for r in rows] == [True, True, False]


def test_new_gpu_goes_last_and_vanished_gpu_keeps_its_place(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    reconcile(conn, [(A, "a"), (B, "b"), (C, "c")], clock=clock_at(1.0))
    set_order(conn, [B, A, C])
    # B is pulled, D is plugged in (D sits earlier on the bus than C).
    rows = reconcile(conn, [(A, "a"), (D, "d"), (C, "c")], clock=clock_at(2.0))
    assert [r.uuid for r in rows] == [B, A, C, D]
    gone = get_gpu(conn, B)
    assert gone is not None and not gone.present and gone.last_seen == 1.0
    # B comes back: first again.
    rows = reconcile(conn, [(A, "a"), (B, "b2"), (C, "c"), (D, "d")], clock=clock_at(3.0))
    assert [r.uuid for r in rows] == [B, A, C, D]
    assert all(r.present for r in rows)
    assert get_gpu(conn, B).name == "b2"


def test_move_up_and_down_clamp_at_the_ends(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    reconcile(conn, [(A, None), (B, None), (C, None)])
    assert [r.uuid for r in move_up(conn, C)] == [A, C, B]
    assert [r.uuid for r in move_up(conn, C)] == [C, A, B]
    assert [r.uuid for r in move_up(conn, C)] == [C, A, B]
    assert [r.uuid for r in move_down(conn, A)] == [C, B, A]
    assert [r.uuid for r in move_down(conn, A)] == [C, B, A]
    assert [r.priority for r in list_gpus(conn)] == [0, 1, 2]


def test_set_order_with_a_prefix_keeps_the_rest_in_place(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    reconcile(conn, [(A, None), (B, None), (C, None), (D, None)])
    assert [r.uuid for r in set_order(conn, [D])] == [D, A, B, C]
    with pytest.raises(ValueError, match="twice"):
        set_order(conn, [A, A])


def test_unknown_gpu_changes_nothing(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    reconcile(conn, [(A, None), (B, None)])
    with pytest.raises(UnknownGpuError, match="koboldtui gpus"):
        set_order(conn, [B, "GPU-nope"])
    assert order(conn) == [A, B]  # rolled back, not half-applied
    with pytest.raises(UnknownGpuError):
        set_enabled(conn, "GPU-nope", False)
    with pytest.raises(UnknownGpuError):
        move_up(conn, "GPU-nope")


def test_forget_closes_ranks(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    reconcile(conn, [(A, None), (B, None), (C, None)])
    forget(conn, A)
    assert [(r.uuid, r.priority) for r in list_gpus(conn)] == [(B, 0), (C, 1)]

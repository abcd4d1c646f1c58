"""An instance's GPU choice becomes the CUDA environment and matching llama.cpp flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_nvml import GiB, three_gpus

from koboldtui.config import ServeConfig
from koboldtui.gpu.nvml import GpuInventory, read_inventory, set_nvml_module
from koboldtui.gpu.priority import (
    GpuSelectionError,
    parse_selection,
    plan_gpus,
    resolve_ref,
    tensor_split_by_free,
)
from koboldtui.store.db import open_database
from koboldtui.store.gpus import UnknownGpuError, list_gpus, reconcile, set_enabled, set_order

BIG, SMALL, MID = "GPU-aaaa-24g", "GPU-bbbb-8g", "GPU-cccc-12g"


@pytest.fixture
def world(tmp_path: Path):
    """Three fake GPUs (free 22, 7, 12 GiB) reconciled into a real SQLite store."""
    module = three_gpus()
    set_nvml_module(module)
    conn = open_database(tmp_path / "k.sqlite3")
    inv = read_inventory()
    reconcile(conn, [(g.uuid, g.name) for g in inv.gpus])
    yield module, conn
    set_nvml_module(None)


def plan(conn, selection):
    return plan_gpus(selection, list_gpus(conn), read_inventory())


def test_auto_uses_enabled_gpus_in_priority_order(world) -> None:
    _, conn = world
    set_order(conn, [MID, BIG, SMALL])
    set_enabled(conn, SMALL, False)
    p = plan(conn, "auto")
    assert p.env() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": f"{MID},{BIG}"}
    assert p.main_gpu == 0 and not p.cpu_only
    assert p.tensor_split == "0.35,0.65"  # 12 GiB free vs 22 GiB free
    assert [g.index for g in p.gpus] == [2, 0]


def test_cpu_hides_every_gpu_and_forces_zero_layers(world) -> None:
    _, conn = world
    p = plan(conn, "cpu")
    assert p.env() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ""}
    cfg = p.apply(ServeConfig(gpu_layers=99, tensor_split="1,1", main_gpu=2))
    assert (cfg.gpu_layers, cfg.tensor_split, cfg.main_gpu) == (0, None, 0)


def test_single_gpu_has_no_tensor_split(world) -> None:
    _, conn = world
    p = plan(conn, "1")
    assert p.visible_devices == SMALL and p.tensor_split is None
    cfg = p.apply(ServeConfig(gpu_layers=99, tensor_split="3,1"))
    assert (cfg.gpu_layers, cfg.tensor_split, cfg.main_gpu) == (99, None, 0)


def test_explicit_list_by_index_and_uuid_prefix_keeps_the_given_order(world) -> None:
    _, conn = world
    p = plan(conn, ["GPU-cccc", 0])
    assert p.visible_devices == f"{MID},{BIG}"
    cfg = p.apply(ServeConfig(gpu_layers=-1))
    assert "--tensor-split" in cfg.to_argv() and cfg.tensor_split == "0.35,0.65"


def test_explicit_disabled_absent_or_unknown_gpus_are_refused(world) -> None:
    module, conn = world
    set_enabled(conn, SMALL, False)
    with pytest.raises(GpuSelectionError, match="disabled: enable it with `koboldtui gpus enable"):
        plan(conn, "1")
    with pytest.raises(UnknownGpuError, match="no GPU 5 now"):
        plan(conn, "5")
    with pytest.raises(UnknownGpuError, match="no GPU matches GPU-zzz"):
        plan(conn, "GPU-zzz")
    module.remove(BIG)
    reconcile(conn, [(g.uuid, g.name) for g in read_inventory().gpus])
    with pytest.raises(GpuSelectionError, match="not present now"):
        plan(conn, BIG)
    # auto just skips the absent one
    assert plan(conn, "auto").visible_devices == MID


def test_all_gpus_disabled_falls_back_to_cpu_with_a_note(world) -> None:
    _, conn = world
    for uuid in (BIG, SMALL, MID):
        set_enabled(conn, uuid, False)
    p = plan(conn, "auto")
    assert p.cpu_only and p.visible_devices == "" and "every GPU is disabled" in p.notes[0]


def test_gpus_not_yet_in_the_store_are_used_last(world) -> None:
    module, conn = world
    from fake_nvml import FakeGpu

    module.gpus.append(FakeGpu("GPU-dddd-new", "New", 16 * GiB, pci_bus_id="00000000:04:00.0"))
    set_order(conn, [SMALL])
    assert plan(conn, "auto").visible_devices == f"{SMALL},{BIG},{MID},GPU-dddd-new"


def test_without_nvml_auto_is_cpu_and_explicit_passes_through() -> None:
    inv = GpuInventory(False, "NVML not found: no NVIDIA driver on this machine", None)
    auto = plan_gpus("auto", [], inv)
    assert auto.cpu_only and "no NVIDIA driver" in auto.notes[0]
    explicit = plan_gpus("GPU-x,GPU-y", [], inv)
    assert explicit.visible_devices == "GPU-x,GPU-y" and explicit.tensor_split == "0.5,0.5"
    assert "could not check" in explicit.notes[0]


def test_parse_selection() -> None:
    assert parse_selection(None) == "auto"
    assert parse_selection(" Auto ") == "auto"
    assert parse_selection("cpu") == "cpu"
    assert parse_selection(["cpu"]) == "cpu"
    assert parse_selection("0, GPU-ab") == ("0", "GPU-ab")
    assert parse_selection([1, "2"]) == ("1", "2")
    with pytest.raises(GpuSelectionError):
        parse_selection("0,0")
    with pytest.raises(GpuSelectionError):
        parse_selection("cpu,0")


def test_tensor_split_weights() -> None:
    assert tensor_split_by_free([10 * GiB]) is None
    assert tensor_split_by_free([30 * GiB, 10 * GiB]) == "0.75,0.25"
    assert tensor_split_by_free([4 * GiB, None]) == "0.5,0.5"
    assert tensor_split_by_free([100 * GiB, 10 * 1024**2]) == "1,0.01"


def test_resolve_ref_reports_ambiguous_prefix(world) -> None:
    _, conn = world
    with pytest.raises(UnknownGpuError, match="matches several GPUs"):
        resolve_ref("GPU-", list_gpus(conn), read_inventory())


def test_the_child_process_receives_the_planned_environment(world) -> None:
    _, conn = world
    set_order(conn, [MID, BIG, SMALL])
    p = plan(conn, "auto")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "stale-from-parent", **p.env()}
    code = "import json, os; print(json.dumps({k: os.environ.get(k) for k in ('CUDA_DEVICE_ORDER', 'CUDA_VISIBLE_DEVICES')}))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert json.loads(out.stdout) == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": f"{MID},{BIG},{SMALL}",
    }

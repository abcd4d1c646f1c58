"""`koboldtui gpus`: the table, the --json shape, and ordering/enabling that persist between runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_nvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml, three_gpus

from koboldtui.cli import main
from koboldtui.gpu.nvml import set_nvml_module
from koboldtui.store.db import default_database

BIG, SMALL, MID = "GPU-aaaa-24g", "GPU-bbbb-8g", "GPU-cccc-12g"


@pytest.fixture
def fake():
    module = three_gpus()
    set_nvml_module(module)
    yield module
    set_nvml_module(None)


def run_json(capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["gpus", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_shape(fake, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys)
    assert data["nvml"] == {"available": True, "reason": None, "driver": "550.54.14"}
    assert [g["uuid"] for g in data["gpus"]] == [BIG, SMALL, MID]
    first = data["gpus"][0]
    for key in (
        "index",
        "uuid",
        "name",
        "memory_total",
        "memory_used",
        "memory_free",
        "utilization",
        "temperature",
        "priority",
        "enabled",
        "processes",
    ):
        assert key in first, key
    assert (first["index"], first["priority"], first["enabled"], first["utilization"]) == (
        0,
        0,
        True,
        35,
    )
    assert first["memory_free"] == 22 * 1024**3
    assert first["processes"] == [{"pid": 1111, "used_memory": 1024**3, "ours": False}]


def test_processes_of_our_instances_are_marked(fake, capsys: pytest.CaptureFixture[str]) -> None:
    conn = default_database()
    conn.execute("INSERT INTO instances VALUES ('chat', '{}', 0, 0)")
    conn.execute("INSERT INTO launches (name, pid, port) VALUES ('chat', 1111, 5001)")
    conn.close()
    assert run_json(capsys)["gpus"][0]["processes"][0]["ours"] is True
    assert main(["gpus"]) == 0
    assert "1 (1 ours)" in capsys.readouterr().out


def test_order_and_disable_persist_between_runs(fake, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "order", "2", BIG]) == 0  # by index and by UUID
    capsys.readouterr()
    assert main(["gpus", "disable", "GPU-bbbb"]) == 0  # a UUID prefix
    assert "is now disabled" in capsys.readouterr().out
    data = run_json(capsys)  # a fresh run: everything read back from SQLite
    assert [(g["uuid"], g["priority"], g["enabled"]) for g in data["gpus"]] == [
        (MID, 0, True),
        (BIG, 1, True),
        (SMALL, 2, False),
    ]
    assert main(["gpus", "up", SMALL]) == 0
    capsys.readouterr()
    assert [g["uuid"] for g in run_json(capsys)["gpus"]] == [MID, SMALL, BIG]
    assert main(["gpus", "enable", "1"]) == 0
    capsys.readouterr()
    assert all(g["enabled"] for g in run_json(capsys)["gpus"])


def test_table_lists_gpus_in_priority_order(fake, capsys: pytest.CaptureFixture[str]) -> None:
    main(["gpus", "order", MID])
    capsys.readouterr()
    assert main(["gpus"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["#", "IDX", "NAME"]
    assert "RTX 3060" in lines[1] and "0.0/12.0 GiB" in lines[1] and lines[1].split()[1] == "2"
    assert "RTX 4090" in lines[2] and "35%" in lines[2] and "50/300 W" in lines[2]
    assert "driver 550.54.14" in lines[-1]


def test_a_gpu_that_disappears_keeps_its_place(fake, capsys: pytest.CaptureFixture[str]) -> None:
    main(["gpus", "order", MID, SMALL, BIG])
    capsys.readouterr()
    fake.remove(SMALL)
    data = run_json(capsys)
    assert [(g["uuid"], g["index"]) for g in data["gpus"]] == [(MID, 1), (SMALL, None), (BIG, 0)]
    assert main(["gpus"]) == 0
    assert "enabled, absent" in capsys.readouterr().out


def test_unknown_gpu_is_a_clear_error(fake, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus", "disable", "9"]) == 1
    err = capsys.readouterr().err
    assert "there is no GPU 9 now" in err and "koboldtui gpus" in err
    assert main(["gpus", "order", "GPU-zzz"]) == 1
    assert "no GPU matches GPU-zzz" in capsys.readouterr().err


def test_no_driver_is_exit_0_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    module = FakeNvml()
    module.init_error = NVML_ERROR_LIBRARY_NOT_FOUND
    set_nvml_module(module)
    try:
        assert main(["gpus"]) == 0
        assert capsys.readouterr().out.startswith(
            "No GPUs: NVML not found: no NVIDIA driver on this machine"
        )
        data = run_json(capsys)
        assert data["nvml"]["available"] is False and data["gpus"] == []
        assert "no NVIDIA driver" in data["nvml"]["reason"]
    finally:
        set_nvml_module(None)


def test_real_cli_process_on_this_machine(kt_home: Path) -> None:
    """The installed entry point with the real pynvml: exit 0 and a valid JSON either way."""
    out = subprocess.run(
        [sys.executable, "-m", "koboldtui.cli", "gpus", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "KOBOLDTUI_HOME": str(kt_home)},
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"nvml", "gpus"} and set(data["nvml"]) == {"available", "reason", "driver"}
    if not data["nvml"]["available"]:
        assert data["gpus"] == [] and data["nvml"]["reason"]

"""``koboldtui instance/start/stop/ps/logs``: what a script sees for good and bad input."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from koboldtui.cli import main
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def saved() -> list[str]:
    return InstanceStore(open_database(app_paths().ensure().database)).names()


def test_add_list_edit_rm(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    code, out, _ = run(
        capsys,
        "instance",
        "add",
        "chat",
        "--model",
        str(model),
        "--port",
        "5101",
        "--gpus",
        "1,0",
        "--gpu-layers",
        "-1",
        "--ctx",
        "2048",
        "--parallel",
        "2",
        "--autostart",
        "--restart",
        "on-failure",
        "--env",
        "FOO=bar",
    )
    assert code == 0 and "added instance 'chat' on port 5101" in out
    code, out, _ = run(capsys, "instance", "list", "--json")
    spec = json.loads(out)[0]
    assert (
        spec["gpus"] == ["1", "0"]
        and spec["gpu_layers"] == -1
        and spec["extra_env"] == {"FOO": "bar"}
    )
    assert spec["model"] == str(model.resolve()) and spec["autostart"] is True

    code, out, _ = run(
        capsys,
        "instance",
        "edit",
        "chat",
        "--cpu",
        "--no-autostart",
        "--horde",
        "--horde-name",
        "w",
        "--horde-key",
        "HK-123",
    )
    assert code == 0
    spec = json.loads(run(capsys, "instance", "list", "--json")[1])[0]
    assert spec["gpus"] == "cpu" and spec["autostart"] is False and spec["horde"]["enabled"] is True
    assert "HK-123" not in json.dumps(spec)
    secrets = app_paths().secrets_file
    assert "HK-123" in secrets.read_text() and stat.S_IMODE(secrets.stat().st_mode) == 0o600

    code, out, _ = run(capsys, "instance", "list")
    assert out.splitlines()[0].split() == [
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
    ]
    assert out.splitlines()[1].split()[:4] == ["chat", "5101", "tiny.gguf", "cpu"]
    code, out, _ = run(capsys, "instance", "rm", "chat")
    assert code == 0 and saved() == []
    assert "HK-123" not in secrets.read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["instance", "add", "x", "--port", "70000"], "port 70000 is out of range"),
        (["instance", "add", "x", "--port", "5201", "--model", "/no/such.gguf"], "does not exist"),
        (["instance", "add", "x", "--port", "5201", "--gpus", "fast"], "neither a GPU index"),
        (
            ["instance", "add", "x", "--port", "5201", "--env", "NOEQUALS"],
            "must look like KEY=VALUE",
        ),
        (["instance", "add", "x", "--port", "5201", "--horde"], "needs an API key"),
        (["instance", "add", "x y", "--port", "5201"], "is not usable"),
        (["instance", "add", "x", "--port", "5201", "--host", "0.0.0.0"], "--api-key"),
        (["instance", "edit", "ghost", "--port", "5202"], "no instance named 'ghost'"),
        (["instance", "rm", "ghost"], "no instance named 'ghost'"),
        (["start", "ghost"], "no instance named 'ghost'"),
        (["stop", "ghost"], "no instance named 'ghost'"),
        (["logs", "ghost"], "no instance named 'ghost'"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_half_created(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("koboldtui: error: ") and message in err and len(err.splitlines()) == 1
    assert saved() == []
    assert not app_paths().secrets_file.exists()


def test_two_specs_on_one_port_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "instance", "add", "a", "--port", "5301")[0] == 0
    code, _, err = run(capsys, "instance", "add", "b", "--port", "5301")
    assert code == 1 and "port 5301 is already used by instance 'a'" in err
    assert run(capsys, "instance", "add", "b", "--port", "5302")[0] == 0
    code, _, err = run(capsys, "instance", "edit", "b", "--port", "5301")
    assert code == 1 and "already used by instance 'a'" in err
    assert json.loads(run(capsys, "instance", "list", "--json")[1])[1]["port"] == 5302


def test_ps_and_logs_of_instances_never_started(capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads(run(capsys, "ps", "--json")[1]) == []
    assert "no instances yet" in run(capsys, "ps")[1]
    run(capsys, "instance", "add", "a", "--port", "5401", "--cpu")
    assert json.loads(run(capsys, "ps", "--json")[1]) == [
        {
            "name": "a",
            "state": "stopped",
            "port": 5401,
            "pid": None,
            "model": "bundled",
            "gpus": "cpu",
            "restarts": 0,
            "uptime_s": None,
            "last_error": None,
            "kind": "serve",
            "started_by": None,
            "vram_mib": None,
            "facts": None,
        }
    ]
    code, _, err = run(capsys, "logs", "a")
    assert code == 1 and "has no log yet" in err
    code, out, _ = run(capsys, "stop", "a")
    assert code == 0 and "a is not running" in out


def test_edit_without_changes_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "instance", "add", "a", "--port", "5501")
    code, _, err = run(capsys, "instance", "edit", "a")
    assert code == 1 and "nothing to change" in err


def test_ps_json_into_a_reader_that_left_ends_quietly(kt_home) -> None:
    """`koboldtui ps --json | head`: the reader closes the pipe first; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "koboldtui.cli", "instance", "add", "x", "--port", "5123"],
                   check=True, capture_output=True, env=os.environ.copy(), timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "koboldtui.cli", "ps", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before a byte is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err

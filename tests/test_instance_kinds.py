"""Command and remote instances as a script sees them: ``instance add --cmd/--url``, refusals, the store.

No process is started here (tests/test_control_command.py and test_control_remote.py do
that); these check every bad input gets one line saying what to pass instead.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
from pathlib import Path

import pytest

from koboldtui.cli import main
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import StartError
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import MIGRATIONS, open_database
from koboldtui.store.instances import InstanceStore


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listed(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(run(capsys, "instance", "list", "--json")[1])}


def test_add_command_and_remote_instances(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "instance", "add", "img", "--port", "5002", "--cpu",
                         "--cmd", "koboldcpp --port {port} --sdmodel /m/sd.safetensors",
                         "--health", "/api/extra/version")
    assert code == 0, err
    assert "added instance 'img' on port 5002 ($ koboldcpp --port {port}" in out
    code, out, err = run(capsys, "instance", "add", "box2", "--url", "http://10.0.0.2:5001/",
                         "--api-key", "s3cret")
    assert code == 0 and "added remote instance 'box2' at http://10.0.0.2:5001" in out, err
    specs = listed(capsys)
    assert specs["img"]["kind"] == "command" and specs["img"]["gpus"] == "cpu"
    assert specs["img"]["health"] == "/api/extra/version"
    assert specs["box2"]["kind"] == "remote" and specs["box2"]["port"] == 5001
    assert "s3cret" not in json.dumps(specs)  # the key lives in the 0600 secrets file
    # a remote port is on another box: a local instance may use the same number
    assert run(capsys, "instance", "add", "local", "--port", "5001")[0] == 0
    out = run(capsys, "instance", "list")[1]
    assert "$ koboldcpp" in out and "http://10.0.0.2:5001" in out and "remote" in out
    img_row = next(line for line in out.splitlines() if line.startswith("img "))
    assert img_row.split()[4:9] == ["cpu", "-", "-", "-", "-"]  # its sizes are in its own command line
    # the kind columns the migration adds, computed from the spec JSON
    conn = open_database(app_paths().ensure().database)
    rows = dict(conn.execute("SELECT name, kind FROM instances").fetchall())
    assert rows == {"img": "command", "box2": "remote", "local": "serve"}
    # a remote instance is watched, never started or stopped here
    supervisor = Supervisor(app_paths(), InstanceStore(conn))
    with pytest.raises(StartError, match="koboldtui watches it but does not start"):
        supervisor.start("box2")
    code, _, err = run(capsys, "stop", "box2")
    assert code == 1 and "stop it on its own machine" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "5002", "--cmd", "koboldcpp --port 5002"], "--cmd must contain {port}"),
        (["--port", "5002", "--cmd", "srv --port {port} --x {nope}"], "unknown placeholders {nope}"),
        (["--port", "5002", "--cmd", "srv --port {port} 'open"], "check the quotes"),
        (["--port", "5002", "--cmd", "srv {port}", "--health", "health"], "starting with '/'"),
        (["--url", "10.0.0.2:5001"], "must look like http://host:port"),
        (["--cmd", "srv {port}"], "--port is required"),
        (["--port", "5002", "--cmd", "srv {port}", "--url", "http://a:1"], "not allowed with"),
        (["--port", "5002", "--cmd", "srv {port}", "--horde", "--horde-name", "w", "--horde-key", "k"],
         "drop --horde"),
    ],
)
def test_bad_kind_flags_say_what_to_pass(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code, _, err = run(capsys, "instance", "add", "x", *argv)
    except SystemExit as exc:  # argparse refuses --cmd together with --url
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code != 0 and message in err


def test_a_missing_program_is_refused_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, "instance", "add", "x", "--port", "5003", "--cmd", "no-such-server --port {port}")
    code, _, err = run(capsys, "start", "x")
    assert code == 1 and "the program 'no-such-server' was not found" in err
    assert InstanceStore(open_database(app_paths().ensure().database)).launches() == []


def test_edit_turns_an_instance_into_a_command_one_and_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run(capsys, "instance", "add", "a", "--port", "5004")
    assert run(capsys, "instance", "edit", "a", "--cmd", "llama-server --port {port}")[0] == 0
    assert listed(capsys)["a"]["kind"] == "command"
    assert run(capsys, "instance", "edit", "a", "--cmd", "")[0] == 0
    assert listed(capsys)["a"]["kind"] == "serve"


def test_an_old_database_gains_the_kind_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    old = InstanceSpec(name="old", port=5001).to_dict()
    for new_field in ("kind", "command", "health", "url"):
        old.pop(new_field)
    conn.execute("INSERT INTO instances VALUES ('old', ?, 0, 0)", (json.dumps(old),))
    conn.commit()
    conn.close()
    upgraded = open_database(path)
    assert tuple(upgraded.execute("SELECT kind, cmd, url FROM instances").fetchone()) == ("serve", None, None)
    spec = InstanceSpec.from_dict(InstanceStore(upgraded).get("old").spec)
    assert spec.kind == "serve" and spec.command == ""


def test_a_taken_port_is_refused_before_the_command_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        run(capsys, "instance", "add", "x", "--port", str(port), "--cmd", f"{sys.executable} -V {{port}}")
        code, _, err = run(capsys, "start", "x")
    assert code == 1 and f"port {port} is taken by pid {os.getpid()}" in err
    assert InstanceStore(open_database(app_paths().ensure().database)).launches() == []



def test_a_restarted_or_edited_server_is_detected_afresh() -> None:
    from koboldtui.control.flavour import FlavourFacts
    from koboldtui.control.remote import FlavourWatch

    asked: list[str | None] = []

    def reader(base_url, *, flavour, api_key, timeout_s):
        asked.append(flavour)
        return FlavourFacts("koboldcpp")

    watch = FlavourWatch(ttl_s=0.0, reader=reader)
    watch.look("a", "http://127.0.0.1:5001", pid=10)
    watch.look("a", "http://127.0.0.1:5001", pid=10)  # the same server: its flavour is known
    watch.look("a", "http://127.0.0.1:5001", pid=11)  # restarted (maybe with another command)
    assert asked == [None, "koboldcpp", None]

"""secrets.toml under concurrent writers: every process's key survives, and the file stays 0600 TOML."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from koboldtui.control.secrets import InstanceSecrets

WRITER = """
import sys
from koboldtui.control.secrets import InstanceSecrets
store = InstanceSecrets(sys.argv[1])
for i in range(15):
    store.set(f"{sys.argv[2]}-{i}", horde_key=f"key-{sys.argv[2]}-{i}")
"""


def test_processes_writing_at_once_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}"], env=os.environ.copy())
             for n in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    store = InstanceSecrets(path)
    for n in range(4):
        for i in range(15):  # the in-process lock alone lost some of these
            assert store.get(f"p{n}-{i}") == {"horde_key": f"key-p{n}-{i}"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.tmp"))


def test_awkward_names_and_values_round_trip(tmp_path: Path) -> None:
    store = InstanceSecrets(tmp_path / "secrets.toml")
    store.set('we"ird name', api_key='a"b\\c\n\x01', horde_key="plain")
    assert store.get('we"ird name') == {"api_key": 'a"b\\c\n\x01', "horde_key": "plain"}
    store.remove('we"ird name')
    assert store.get('we"ird name') == {}

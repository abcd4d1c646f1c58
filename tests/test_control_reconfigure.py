"""Switching a running instance's model (or any setting): stop, change the spec, start again."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry, reconfigure
from koboldtui.control.spec import InstanceSpec, SpecError
from koboldtui.control.supervisor import Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore


def hang(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(120)", *argv]


def test_switching_the_model_restarts_with_the_new_one(tmp_path: Path) -> None:
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    registry = InstanceRegistry(store, paths)
    old, new = tmp_path / "old.gguf", tmp_path / "new.gguf"
    for model in (old, new):
        model.write_bytes(b"GGUF" + b"\0" * 64)
    registry.add(InstanceSpec(name="a", port=5951, model=str(old), gpus="cpu"))
    sup = Supervisor(paths, store, command_builder=hang)
    sup.start("a")
    first = store.launch("a")

    def switch(changes: dict) -> InstanceSpec:
        return reconfigure(registry, sup.stop, sup.start, sup.is_running, "a", changes)

    with pytest.raises(SpecError, match="does not exist"):
        switch({"model": str(tmp_path / "missing.gguf")})
    assert store.launch("a") == first and pid_alive(first.pid)  # a bad change stops nothing

    assert switch({"model": str(new)}).model == str(new)
    second = store.launch("a")
    assert second.pid != first.pid and not pid_alive(first.pid)
    deadline = time.monotonic() + 5  # right after exec the kernel may show an empty cmdline
    while not Path(f"/proc/{second.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert str(new) in Path(f"/proc/{second.pid}/cmdline").read_bytes().decode().split("\0")
    sup.stop_all(grace_s=2)
    assert not pid_alive(second.pid)

    switch({"ctx": 1024})  # not running: only the spec changes
    assert store.launch("a") is None and registry.get("a").ctx == 1024

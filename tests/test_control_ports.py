"""A taken port is refused before anything is spawned, naming who holds it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from koboldtui.control.ports import (
    PortUnavailableError,
    check_port_available,
    find_port_holder,
    port_is_free,
)
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.supervisor import StartError, Supervisor
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock
    sock.close()


def test_a_listening_port_is_taken_and_its_holder_is_named(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    assert not port_is_free("127.0.0.1", port)
    holder = find_port_holder(port)
    assert holder is not None and holder.pid == os.getpid()
    with pytest.raises(
        PortUnavailableError, match=rf"port {port} is taken by pid {os.getpid()} \(.*python"
    ):
        check_port_available("127.0.0.1", port)


def test_a_free_port_passes_and_has_no_holder() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert port_is_free("127.0.0.1", port)
    assert find_port_holder(port) is None
    check_port_available("127.0.0.1", port)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_out_of_range_ports_are_refused(port: int) -> None:
    with pytest.raises(PortUnavailableError, match="out of range"):
        check_port_available("127.0.0.1", port)


def test_a_host_that_is_not_ours_is_explained() -> None:
    with pytest.raises(PortUnavailableError, match="not an address of this machine"):
        check_port_available("203.0.113.7", 5999)


def test_start_on_a_taken_port_fails_clearly_and_spawns_nothing(
    listener: socket.socket, tmp_path: Path
) -> None:
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 64)
    port = listener.getsockname()[1]
    InstanceRegistry(store, paths).add(
        InstanceSpec(name="a", port=port, model=str(model), gpus="cpu")
    )
    supervisor = Supervisor(paths, store)
    with pytest.raises(
        StartError, match=rf"cannot start 'a': port {port} is taken by pid {os.getpid()}"
    ):
        supervisor.start("a")
    assert store.launches() == []
    assert not (paths.log_dir / "a.log").exists()
    # the refusal stays on the record, like a crash's (issue 19): failed, with the reason,
    # for every controller, until the person dismisses it (or starts again)
    from koboldtui.control.supervisor import Supervisor as Other

    for sup in (supervisor, Other(paths, InstanceStore(open_database(paths.database)))):
        snap = sup.snapshot("a")
        assert snap.state.value == "failed" and f"port {port} is taken" in snap.last_error
    snap = supervisor.dismiss("a")
    assert snap.state.value == "stopped" and snap.last_error is None

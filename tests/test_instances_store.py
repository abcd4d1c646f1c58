"""Saved instances: unique names and ports, launches that go with their instance, all-or-nothing edits."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from koboldtui.config import HordeSettings
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.secrets import InstanceSecrets
from koboldtui.control.spec import InstanceSpec, SpecError
from koboldtui.paths import AppPaths
from koboldtui.store.db import open_database
from koboldtui.store.instances import (
    DuplicateInstanceError,
    InstanceStore,
    Launch,
    PortConflictError,
    UnknownInstanceError,
)


@pytest.fixture
def store(paths: AppPaths) -> InstanceStore:
    return InstanceStore(open_database(paths.database))


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)  # only the magic is checked when saving
    return path


def test_names_and_ports_are_unique(store: InstanceStore) -> None:
    store.add("a", {"port": 5001})
    with pytest.raises(DuplicateInstanceError, match="already exists"):
        store.add("a", {"port": 5002})
    with pytest.raises(PortConflictError, match="port 5001 is already used by instance 'a'"):
        store.add("b", {"port": 5001})
    store.add("b", {"port": 5002})
    with pytest.raises(PortConflictError):
        store.update("b", {"port": 5001})
    store.update("a", {"port": 5001, "ctx": 1})  # its own port is fine
    assert store.names() == ["a", "b"]
    assert store.get("a").spec == {"port": 5001, "ctx": 1}
    assert store.port_owner(5002) == "b" and store.port_owner(5002, exclude="b") is None


def test_unknown_names_list_the_known_ones(store: InstanceStore) -> None:
    store.add("alpha", {"port": 5001})
    for call in (
        lambda: store.get("zeta"),
        lambda: store.remove("zeta"),
        lambda: store.update("zeta", {"port": 1}),
    ):
        with pytest.raises(UnknownInstanceError, match="no instance named 'zeta' .*alpha"):
            call()


def test_launch_rows_follow_their_instance(store: InstanceStore) -> None:
    store.add("a", {"port": 5001})
    store.record_launch(Launch("a", 123, 5001, "tok1", 10.0, "/l/a.log"))
    store.record_launch(Launch("a", 456, 5001, "tok2", 11.0, "/l/a.log"))
    assert store.launch("a") == Launch("a", 456, 5001, "tok2", 11.0, "/l/a.log")
    assert not store.clear_launch("a", "tok1")  # a stale token does not clear the newer launch
    assert store.launches() == [Launch("a", 456, 5001, "tok2", 11.0, "/l/a.log")]
    store.remove("a")
    assert store.launches() == []


def test_registry_saves_absolute_model_paths_and_secrets_apart(
    store: InstanceStore, paths: AppPaths, gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(gguf.parent)
    registry = InstanceRegistry(store, paths)
    spec = InstanceSpec(
        name="h", port=5010, model="tiny.gguf", horde=HordeSettings(enabled=True, worker_name="w")
    )
    saved = registry.add(spec, horde_key="HORDE-SECRET")
    assert saved.model == str(gguf.resolve())
    raw = paths.database.read_bytes() + Path(str(paths.database) + "-wal").read_bytes()
    assert b"HORDE-SECRET" not in raw
    assert InstanceSecrets(paths.secrets_file).get("h") == {"horde_key": "HORDE-SECRET"}
    assert stat.S_IMODE(paths.secrets_file.stat().st_mode) == 0o600
    registry.edit("h", {"horde": HordeSettings()}, horde_key="")
    assert InstanceSecrets(paths.secrets_file).get("h") == {}
    registry.remove("h")
    assert store.names() == []


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (InstanceSpec(name="x", port=5011, model="/does/not/exist.gguf"), "does not exist"),
        (InstanceSpec(name="x", port=99999), "out of range"),
        (
            InstanceSpec(name="x", port=5011, horde=HordeSettings(enabled=True, worker_name="w")),
            "needs an API key",
        ),
        (
            InstanceSpec(name="x", port=5011, model="nosuchcatalogname"),
            "neither a file nor a model",
        ),
    ],
)
def test_bad_input_leaves_nothing_behind(
    store: InstanceStore, paths: AppPaths, spec: InstanceSpec, needle: str
) -> None:
    registry = InstanceRegistry(store, paths)
    with pytest.raises(SpecError, match=needle):
        registry.add(spec)
    assert store.names() == []
    assert not paths.secrets_file.exists()


def test_a_file_that_is_not_gguf_is_refused(
    store: InstanceStore, paths: AppPaths, tmp_path: Path
) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(SpecError, match="is not a GGUF file"):
        InstanceRegistry(store, paths).add(InstanceSpec(name="x", port=5012, model=str(fake)))
    assert store.names() == []


def test_a_refused_edit_changes_nothing(store: InstanceStore, paths: AppPaths) -> None:
    registry = InstanceRegistry(store, paths)
    registry.add(InstanceSpec(name="a", port=5001))
    registry.add(InstanceSpec(name="b", port=5002))
    before = store.get("b")
    for changes, needle in (
        ({"port": 5001}, "already used by instance 'a'"),
        ({"port": 0}, "out of range"),
        ({"model": "/nope.gguf"}, "does not exist"),
        ({"name": "c"}, "cannot be renamed"),
    ):
        with pytest.raises(SpecError, match=needle):
            registry.edit("b", changes)
    assert store.get("b") == before


def test_secrets_file_keeps_other_tables(paths: AppPaths) -> None:
    paths.secrets_file.write_text('[api]\nkey = "keep-me"\n')
    secrets = InstanceSecrets(paths.secrets_file)
    secrets.set("odd name", api_key='a"b\\c')
    secrets.set("b", horde_key="hk")
    secrets.remove("b")
    assert secrets.get("odd name") == {"api_key": 'a"b\\c'}
    assert 'key = "keep-me"' in paths.secrets_file.read_text()
    assert stat.S_IMODE(paths.secrets_file.stat().st_mode) == 0o600

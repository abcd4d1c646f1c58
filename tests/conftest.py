"""Shared fixtures: an isolated KOBOLDTUI_HOME per test, and the real bundled model assembled once.

Every test gets its own home (config, SQLite, logs) so nothing leaks between tests or into
the developer's own data; the 250 MB bundled GGUF is assembled once per session and linked
into each home's models folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from koboldtui.paths import HOME_ENV, AppPaths, app_paths


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the assembled bundled model, shared by the whole session."""
    from koboldtui.models.bundled import bundled_model_path

    home = tmp_path_factory.mktemp("shared-home")
    paths = app_paths({HOME_ENV: str(home)})
    bundled_model_path(paths)
    return paths.models_dir


@pytest.fixture(scope="session")
def bundled_model(shared_models_dir: Path) -> Path:
    """Path of the real bundled GGUF (Gemma 3 270M Q4_K_M)."""
    return next(shared_models_dir.glob("*.gguf"))


@pytest.fixture(autouse=True)
def kt_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """Point KOBOLDTUI_HOME at a fresh tmp dir; link the shared models in when the model is used."""
    home = tmp_path / "kt-home"
    monkeypatch.setenv(HOME_ENV, str(home))
    for var in ("KOBOLDTUI_API_KEY", "KOBOLDTUI_HORDE_KEY", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    paths = app_paths({HOME_ENV: str(home)})
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    if "bundled_model" in request.fixturenames or "shared_models_dir" in request.fixturenames:
        shared = request.getfixturevalue("shared_models_dir")
        os.symlink(shared, paths.models_dir, target_is_directory=True)
    return home


@pytest.fixture
def paths(kt_home: Path) -> AppPaths:
    """The test's own home, its folders made (the control and store tests' starting point)."""
    return app_paths().ensure()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A stand-in GGUF file: enough for a spec to be valid, never loaded."""
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


@pytest.fixture(scope="module")
def horde_server():
    """A fake AI Horde: a real HTTP server on 127.0.0.1 (tests/fake_horde.py), one per module."""
    from fake_horde import FakeHorde

    with FakeHorde() as fake:
        yield fake


@pytest.fixture
def horde(horde_server):
    """The module's fake Horde, with its script and records reset for this test."""
    horde_server.reset()
    return horde_server


@pytest.fixture
async def make_worker(horde):
    """Build Horde workers against the fake Horde (scripted engine by default); all are
    force-stopped after the test. ``url=`` points one elsewhere (e.g. nowhere)."""
    from fake_horde import ScriptedEngine, build_worker

    made = []

    def make(engine=None, *, url=None, **kw):
        worker = build_worker(url or horde.url, engine or ScriptedEngine(), **kw)
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(force=True)

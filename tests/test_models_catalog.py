"""The model catalogue lists the bundled model, the models dir and user folders; broken files get a reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from koboldtui.cli import main
from koboldtui.models.catalog import add_model_dir, list_models, model_dirs, remove_model_dir
from koboldtui.paths import AppPaths
from koboldtui.store.db import default_database, open_database


def tiny_gguf(path: Path, arch: str = "llama", layers: int = 2, ctx: int = 2048) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_context_length(ctx)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((8, 8), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def own_paths(tmp_path: Path, shared_models_dir: Path) -> AppPaths:
    """An installation whose models dir is a real folder holding (links to) the bundled model."""
    paths = AppPaths(tmp_path / "cfg", tmp_path / "data", tmp_path / "logs").ensure()
    for item in shared_models_dir.iterdir():
        if item.suffix in (".gguf", ".sha256"):
            os.symlink(item, paths.models_dir / item.name)
    return paths


def test_bundled_first_then_models_dir_then_user_folders(
    tmp_path: Path, own_paths: AppPaths
) -> None:
    tiny_gguf(own_paths.models_dir / "vendor" / "Tiny-7B.Q8.gguf")
    user = tmp_path / "my models"
    tiny_gguf(user / "a" / "b" / "deep.gguf", arch="qwen2", layers=3, ctx=8192)
    (user / "notes.txt").write_text("not a model")
    conn = open_database(own_paths.database)
    add_model_dir(conn, user)
    entries = list_models(conn, own_paths)
    assert [(e.name, e.source) for e in entries] == [
        ("bundled", "bundled"),
        ("Tiny-7B.Q8", "models dir"),
        ("deep", str(user.resolve())),
    ]
    bundled, tiny, deep = entries
    assert (bundled.architecture, bundled.quantization, bundled.context_length, bundled.layers) == (
        "gemma3",
        "Q4_K_M",
        32768,
        18,
    )
    assert bundled.size and bundled.size > 200 * 1024**2 and bundled.usable
    assert (deep.architecture, deep.layers, deep.context_length, deep.quantization) == (
        "qwen2",
        3,
        8192,
        "F16",
    )
    assert tiny.path == own_paths.models_dir / "vendor" / "Tiny-7B.Q8.gguf"


def test_broken_files_are_listed_with_a_reason(tmp_path: Path, own_paths: AppPaths) -> None:
    user = tmp_path / "dl"
    user.mkdir()
    (user / "fake.gguf").write_bytes(b"<html>404 not found</html>" * 10)
    good = tiny_gguf(user / "good.gguf")
    (user / "cut.gguf").write_bytes(good.read_bytes()[:60])
    conn = open_database(own_paths.database)
    add_model_dir(conn, user)
    by_name = {e.name: e for e in list_models(conn, own_paths)}
    assert by_name["good"].usable
    assert not by_name["fake"].usable and "not a GGUF file" in by_name["fake"].error
    assert not by_name["cut"].usable and "truncated" in by_name["cut"].error


def test_split_shards_after_the_first_are_not_listed(tmp_path: Path, own_paths: AppPaths) -> None:
    user = tmp_path / "split"
    tiny_gguf(user / "big-00001-of-00002.gguf")
    tiny_gguf(user / "big-00002-of-00002.gguf")
    conn = open_database(own_paths.database)
    add_model_dir(conn, user)
    names = [e.name for e in list_models(conn, own_paths)]
    assert "big-00001-of-00002" in names and "big-00002-of-00002" not in names


def test_model_dirs_are_remembered_and_bad_ones_refused(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "k.sqlite3")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    add_model_dir(conn, a)
    add_model_dir(conn, b)
    add_model_dir(conn, a)  # no duplicates
    assert model_dirs(conn) == [a.resolve(), b.resolve()]
    with pytest.raises(ValueError, match="does not exist"):
        add_model_dir(conn, tmp_path / "nope")
    (tmp_path / "f.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        add_model_dir(conn, tmp_path / "f.gguf")
    assert remove_model_dir(conn, a) and not remove_model_dir(conn, a)
    assert model_dirs(open_database(tmp_path / "k.sqlite3")) == [b.resolve()]


def test_a_vanished_folder_is_reported_not_fatal(tmp_path: Path, own_paths: AppPaths) -> None:
    gone = tmp_path / "usb"
    gone.mkdir()
    conn = open_database(own_paths.database)
    add_model_dir(conn, gone)
    gone.rmdir()
    entries = list_models(conn, own_paths)
    assert entries[0].name == "bundled" and entries[0].usable
    assert "is missing" in entries[-1].error


def test_cli_models_json_and_add_dir(
    tmp_path: Path, bundled_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "extra"
    tiny_gguf(user / "extra-model.gguf")
    assert main(["models", "add-dir", str(user)]) == 0
    assert "added" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listing] == ["bundled", "extra-model"]
    assert listing[0]["quantization"] == "Q4_K_M" and listing[0]["error"] is None
    assert set(listing[1]) >= {
        "name",
        "path",
        "size",
        "quantization",
        "architecture",
        "context_length",
    }
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        "NAME",
        "QUANT",
        "ARCH",
        "CTX",
        "LAYERS",
        "SIZE",
        "PATH",
    ]
    assert "extra-model" in table and "gemma3" in table
    assert main(["models", "dirs"]) == 0
    assert capsys.readouterr().out.strip() == str(user.resolve())
    assert main(["models", "add-dir", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["models", "rm-dir", str(user)]) == 0
    assert model_dirs(default_database()) == []

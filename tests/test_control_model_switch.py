"""A model switch checks the new file before stopping anything, and rolls back when it fails
to load (issue 19, like KoboldCpp's admin reload): real `koboldtui serve` children, real GGUFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from koboldtui.control.model_switch import ModelSwitchError, switch_model, switch_problem
from koboldtui.control.process import pid_alive
from koboldtui.control.registry import InstanceRegistry
from koboldtui.control.spec import InstanceSpec
from koboldtui.control.state import InstanceState
from koboldtui.control.supervisor import Supervisor
from koboldtui.models.catalog import describe
from koboldtui.models.model_check import model_problem, ram_problem, read_model
from koboldtui.paths import app_paths
from koboldtui.store.db import open_database
from koboldtui.store.instances import InstanceStore
from tests.instance_harness import free_port


def vocab_only(path: Path) -> Path:
    """A GGUF with a tokenizer and no tensors, like llama.cpp's ggml-vocab-*.gguf test files."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<s>", "a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def truncated(model: Path, path: Path) -> Path:
    """The real model's first half: a readable header whose tensors run past the end of the file."""
    with model.open("rb") as src, path.open("wb") as dst:
        dst.write(src.read(model.stat().st_size // 2))
    return path


def test_a_vocab_only_or_unreadable_gguf_is_refused_and_marked_in_the_catalogue(tmp_path, bundled_model) -> None:
    vocab = vocab_only(tmp_path / "ggml-vocab-llama.gguf")
    assert "vocab-only" in (model_problem(vocab) or "") and "0 tensors" in (model_problem(vocab) or "")
    assert describe(vocab, "ggml-vocab-llama", "models dir").error is not None  # the picker lists it as broken
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    assert (model_problem(junk) or "").startswith("cannot read it")
    assert model_problem(bundled_model) is None
    meta, _ = read_model(bundled_model)
    assert meta is not None and ram_problem(meta, 64 * 2**20) is not None  # 64 MiB of RAM: too little
    assert model_problem(bundled_model, cpu_only=True, ram_bytes=64 * 2**20) is not None
    assert ram_problem(meta, 8 * 2**30) is None


def test_a_bad_model_is_refused_before_the_stop_and_a_failed_load_rolls_back(tmp_path, bundled_model) -> None:
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    registry = InstanceRegistry(store, paths)
    registry.add(InstanceSpec(name="a", port=free_port(), model="bundled", gpus="cpu", gpu_layers=0, ctx=512,
                              restart="on-failure"))
    sup = Supervisor(paths, store)
    steps: list[str] = []
    try:
        sup.start("a", wait=True, timeout_s=90)
        first = store.launch("a")
        assert first is not None

        vocab = vocab_only(tmp_path / "vocab.gguf")
        assert "vocab-only" in (switch_problem(sup, "a", str(vocab)) or "")
        with pytest.raises(ModelSwitchError, match="keeps bundled") as refused:
            switch_model(sup, registry, "a", str(vocab), lambda step, _f: steps.append(step))
        assert not refused.value.rolled_back
        assert store.launch("a") == first and pid_alive(first.pid)  # nothing was stopped

        broken = truncated(bundled_model, tmp_path / "half.gguf")
        with pytest.raises(ModelSwitchError, match="rolled back to bundled, which is running again") as failed:
            switch_model(sup, registry, "a", str(broken), lambda step, _f: steps.append(step), timeout_s=90)
        assert failed.value.rolled_back
        assert registry.get("a").model == "bundled"
        assert sup.snapshot("a").state is InstanceState.READY
        assert any("rolling back" in s for s in steps)
    finally:
        sup.stop_all(grace_s=5)

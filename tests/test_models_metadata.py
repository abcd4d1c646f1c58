"""GGUF headers are read quickly and correctly, on the real bundled model and on hand-made files."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from koboldtui.models.metadata import GgufError, read_metadata


def write_tiny_gguf(path: Path, *, file_type: int | None = 1, kv_array: bool = False) -> None:
    """A 2-layer llama-shaped GGUF with a string-array vocab, written by the gguf package."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Tiny Test")
    w.add_block_count(2)
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    if kv_array:
        w.add_head_count_kv([1, 2])
    else:
        w.add_head_count_kv(2)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_token_list([f"tok{i}" for i in range(5000)])
    w.add_token_scores([0.0] * 5000)
    w.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float16))
    w.add_tensor("output_norm.weight", np.zeros(64, dtype=np.float32))
    w.add_tensor("output.weight", np.zeros((100, 64), dtype=np.float16))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((128, 64), dtype=np.float16))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.zeros(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_bundled_model_metadata(bundled_model: Path) -> None:
    started = time.perf_counter()
    meta = read_metadata(bundled_model)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"reading the header took {elapsed:.2f}s: it must not touch tensor data"
    assert (meta.architecture, meta.name, meta.version) == ("gemma3", "Gemma 3 270m", 3)
    assert (meta.block_count, meta.context_length, meta.embedding_length) == (18, 32768, 640)
    assert (meta.head_count, meta.head_count_kv, meta.key_length, meta.value_length) == (
        4,
        1,
        256,
        256,
    )
    assert meta.quantization == "Q4_K_M" and meta.file_type == 15
    assert meta.vocab_size == 262144
    assert meta.tensor_count == 236 and len(meta.layer_bytes) == 18
    assert meta.file_size == bundled_model.stat().st_size
    # Tied embeddings: the output head is token_embd (Q8_0, 640 x 262144 → 178 257 920 bytes) + norm.
    assert meta.output_bytes == 178_257_920 + 640 * 4
    assert meta.non_layer_bytes == meta.output_bytes
    assert 0.9 * meta.file_size < meta.total_tensor_bytes < meta.file_size
    assert meta.kv_bytes_per_token_per_layer() == 1 * (256 + 256) * 2


def test_matches_the_gguf_packages_reader(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    meta = read_metadata(path)
    reader = gguf.GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    assert meta.tensor_count == len(reader.tensors)
    assert meta.layer_bytes == tuple(
        sum(v for k, v in sizes.items() if k.startswith(f"blk.{i}.")) for i in range(2)
    )
    assert (
        meta.non_layer_bytes
        == sizes["token_embd.weight"] + sizes["output.weight"] + sizes["output_norm.weight"]
    )
    assert meta.output_bytes == sizes["output.weight"] + sizes["output_norm.weight"]
    assert (meta.architecture, meta.name, meta.block_count, meta.context_length) == (
        "llama",
        "Tiny Test",
        2,
        2048,
    )
    assert (meta.head_count, meta.head_count_kv, meta.head_dim_k, meta.vocab_size) == (
        4,
        2,
        16,
        5000,
    )
    assert meta.quantization == "F16"
    assert meta.fields["llama.feed_forward_length"] == 128


def test_per_layer_kv_heads_take_the_largest(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, kv_array=True)
    assert read_metadata(path).head_count_kv == 2


def test_quantisation_is_guessed_without_file_type(tmp_path: Path) -> None:
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, file_type=None)
    assert read_metadata(path).quantization == "F16"


def test_not_gguf_truncated_and_tiny_files_are_refused_with_reasons(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(GgufError, match="not a GGUF file"):
        read_metadata(junk)
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF")
    with pytest.raises(GgufError, match="too small"):
        read_metadata(tiny)
    good = tmp_path / "good.gguf"
    write_tiny_gguf(good)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:2000])  # inside the vocab array
    with pytest.raises(GgufError, match="truncated"):
        read_metadata(cut)
    old = tmp_path / "v1.gguf"
    old.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + b"\0" * 40)
    with pytest.raises(GgufError, match="too old"):
        read_metadata(old)
    with pytest.raises(OSError):
        read_metadata(tmp_path / "missing.gguf")

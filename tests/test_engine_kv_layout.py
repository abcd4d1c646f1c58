"""The KV layout: one buffer shared by every slot where that keeps context shift, one stream
per slot for sliding-window models; a unified engine says the same as a per-slot one."""

from __future__ import annotations

import asyncio

import pytest

from koboldtui.engine.batch_plan import BatchPlan
from koboldtui.engine.llama_engine import EngineConfig, LlamaEngine
from koboldtui.engine.native import choose_kv_layout
from koboldtui.engine.types import GenerationRequest, SamplingParams

GREEDY = SamplingParams(temperature=0.0, rep_pen=1.0)
PROMPTS = ["The lighthouse keeper climbed the stairs and", "Recipe for bread: mix flour, water and",
           "The train left the station at dawn, and", "In the year 2300 the first colony ship"]


def test_plain_models_share_one_buffer_and_sliding_window_models_keep_shift() -> None:
    assert choose_kv_layout(parallel=4, n_swa=0, swa_full=False).unified
    gemma = choose_kv_layout(parallel=4, n_swa=512, swa_full=False)
    assert not gemma.unified and "context shift" in gemma.reason
    assert choose_kv_layout(parallel=4, n_swa=512, swa_full=True).unified
    assert not choose_kv_layout(parallel=1, n_swa=0, swa_full=False).unified
    forced = choose_kv_layout(parallel=4, n_swa=512, swa_full=False, forced=True)
    assert forced.unified and "KOBOLDTUI_KV_UNIFIED=1" in forced.reason
    assert not choose_kv_layout(parallel=4, n_swa=0, swa_full=False, forced=False).unified


def req(prompt: str, n: int = 12) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_tokens=n, ban_eos=True, sampling=GREEDY)


@pytest.mark.slow
async def test_a_unified_engine_says_what_a_per_slot_engine_says(bundled_model) -> None:
    unified = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=256, parallel=4, batch=BatchPlan(64),
                                       threads=2, kv_unified=True))
    split = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=256, parallel=4, batch=BatchPlan(64), threads=2))
    try:
        assert unified.kv_layout.unified and not split.kv_layout.unified  # Gemma 3: sliding window
        # One at a time, both layouts do the same arithmetic. (Side by side they may not: the
        # micro-batches are cut differently, and llama.cpp's sums depend on the batch shape,
        # as they do between one and four sequences in the same layout.)
        alone = [[(await e.submit(req(p)).result()).text for p in PROMPTS] for e in (unified, split)]
        assert alone[0] == alone[1] and all(alone[0])
        # All slots busy, one ending early (a gap between busy slots), then a warm second turn.
        handles = [unified.submit(req(p, 4 if i == 1 else 16)) for i, p in enumerate(PROMPTS)]
        results = await asyncio.gather(*(h.result() for h in handles))
        assert [r.completion_tokens for r in results] == [16, 4, 16, 16]
        # A second turn reuses the slot's cached prompt and still says the same.
        turn2 = PROMPTS[0] + alone[0][0] + " Then"
        warm = await unified.submit(req(turn2)).result()
        assert warm.cached_tokens > 0
        assert warm.text == (await split.submit(req(turn2)).result()).text
    finally:
        unified.close()
        split.close()

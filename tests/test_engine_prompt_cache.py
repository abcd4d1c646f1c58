"""Slots that remember, on the real bundled model: cache hits, identical greedy text, context shift."""

from __future__ import annotations

import pytest

from koboldtui.engine import prompt_fit
from koboldtui.engine.batch_plan import BatchPlan
from koboldtui.engine.llama_engine import EngineConfig, LlamaEngine
from koboldtui.engine.types import GenerationRequest, Origin, SamplingParams

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(temperature=0.0, rep_pen=1.0)
STORY = ("The lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the wick, "
         "polished the great lens, and wrote the weather into a leather book that had belonged to "
         "his grandfather. Ships passed far out on the grey water, and sometimes one of them answered "
         "his light with a long low horn. One winter night a small boat came in through the fog")


def req(prompt: str, n: int = 12, **kw) -> GenerationRequest:
    kw.setdefault("sampling", GREEDY)
    return GenerationRequest(prompt=prompt, max_tokens=n, ban_eos=True, **kw)


@pytest.fixture(scope="module")
def engine(bundled_model):
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=512, parallel=2, batch=BatchPlan(64), threads=2))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def cold(bundled_model):
    """A second engine whose slots never saw these prompts: the cold reference."""
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=512, parallel=1, batch=BatchPlan(64), threads=2))
    yield eng
    eng.close()


async def test_second_turn_hits_the_cache_and_says_the_same_as_a_cold_run(engine, cold):
    first = await engine.submit(req(STORY)).result()
    assert first.cached_tokens == 0
    turn2 = STORY + first.text + " The keeper"
    before = engine.snapshot().totals.prompt_tokens_cached
    handle = engine.submit(req(turn2, 16))
    warm = await handle.result()
    entry = next(e for e in engine.snapshot().queue if e.genkey == handle.genkey)
    # Everything up to the first turn's answer was already in the slot's KV.
    assert warm.cached_tokens >= len(engine.tokenize(STORY))
    assert entry.cached_tokens == warm.cached_tokens
    assert engine.snapshot().totals.prompt_tokens_cached - before == warm.cached_tokens
    reference = await cold.submit(req(turn2, 16)).result()
    assert reference.cached_tokens == 0 or reference.cached_tokens < warm.cached_tokens
    assert warm.text == reference.text and warm.text
    # The very same prompt again: all but its last token come from the cache.
    again = await engine.submit(req(turn2, 16)).result()
    assert again.cached_tokens == again.prompt_tokens - 1 and again.text == warm.text


async def test_two_chats_each_find_their_own_slot(engine):
    chats = [STORY, "Recipe for bread: mix flour, water, salt and yeast, then knead the dough until"]
    answers = [await engine.submit(req(c)).result() for c in chats]
    for chat, answer in zip(chats, answers):
        follow = await engine.submit(req(chat + answer.text + " Next,")).result()
        assert follow.cached_tokens >= len(engine.tokenize(chat)) - 1


async def test_a_diverging_prompt_reuses_only_the_common_part(engine, cold):
    await engine.submit(req(STORY + " and on board was a girl", 4)).result()
    variant = STORY + " and on board was an old dog"
    warm = await engine.submit(req(variant)).result()
    assert len(engine.tokenize(STORY)) <= warm.cached_tokens < len(engine.tokenize(variant))
    assert warm.text == (await cold.submit(req(variant)).result()).text


async def test_a_horde_job_leaves_the_local_chat_cached(engine):
    chat = "Dear diary, today I finally repaired the old clock in the hallway and"
    answer = await engine.submit(req(chat)).result()
    await engine.submit(req("Horde prompt about something else entirely", 8, origin=Origin.HORDE)).result()
    follow = await engine.submit(req(chat + answer.text + " Then")).result()
    assert follow.cached_tokens >= len(engine.tokenize(chat))


async def test_a_chat_beyond_the_context_keeps_answering_by_shifting(bundled_model):
    """30 turns through a 256-token context with a kept prefix: every turn answers, the KV is
    shifted instead of recomputed, and each turn only processes what is new."""
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=256, parallel=1, batch=BatchPlan(64), threads=2))
    try:
        memory = "[The following is a conversation between a sailor and a lighthouse keeper.]\n"
        n_keep = len(eng.tokenize(memory))
        history = ""
        shifted_turns = 0
        for turn in range(30):
            history += f"Sailor: Tell me about night number {turn}.\nKeeper:"
            result = await eng.submit(req(memory + history, 12, n_keep=n_keep, stop=("\n",))).result()
            assert result.completion_tokens > 0 and result.error is None
            history += result.text + "\n"
            if result.truncated_tokens:
                shifted_turns += 1
                # only the new turn and a little re-fed text are processed, not the whole context
                assert result.cached_tokens >= result.prompt_tokens - 48, (turn, result)
        totals = eng.snapshot().totals
        # The cut drops a quarter of the room at a time: the turns in between keep the same
        # cut and hit the cache without a shift (each shift re-rotates the whole KV cache).
        assert shifted_turns >= 10 and 2 <= totals.context_shifts <= shifted_turns // 2
    finally:
        eng.close()


async def test_without_a_shiftable_cache_a_cut_chat_is_processed_again(bundled_model, caplog):
    """Gemma's window cache is smaller than a 2,048-token slot here, so llama.cpp cannot shift
    it: a conversation cut to fit is processed again (said once in the log), and still answers."""
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=2048, parallel=1, batch=BatchPlan(64),
                                   threads=2, swa_full=False))
    try:
        assert not eng._cache.can_shift
        history = ""
        for turn in range(4):
            history += f"Sailor: Tell me about night number {turn}, and the lamp, and the fog.\nKeeper:"
            result = await eng.submit(req(history, 8, max_context=96, stop=("\n",))).result()
            assert result.completion_tokens > 0 and result.error is None
            history += result.text + "\n"
        assert result.truncated_tokens > 0 and eng.snapshot().totals.context_shifts == 0
        assert sum("cannot be shifted" in r.getMessage() for r in caplog.records) == 1
    finally:
        eng.close()


async def test_shifts_keep_working_past_the_sliding_window(bundled_model, monkeypatch):
    """A 768-token slot is wider than Gemma's 512-token window: after each shift llama.cpp
    overwrites window cells that fell out of the window, and the next shift must still be
    allowed (only the newest window is needed), not refused into a full reprocess."""
    monkeypatch.setattr(prompt_fit, "CUT_STEPS", 10**6)  # a cut (and a shift) every turn
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=768, parallel=1, batch=BatchPlan(64), threads=2))
    try:
        assert eng._cache.can_shift and eng._cache.n_swa == 512
        history = "".join(f"Log entry {i}: calm sea, light wind from the west, one ship passed.\n"
                          for i in range(40))
        for turn in range(8):
            history += f"Question {turn}: what did the keeper see next?\nAnswer:"
            result = await eng.submit(req(history, 8, stop=("\n",))).result()
            history += result.text + "\n"
            if turn >= 2:
                assert result.truncated_tokens > 0
                assert result.cached_tokens >= result.prompt_tokens - 40, (turn, result)
        assert eng.snapshot().totals.context_shifts >= 6
    finally:
        eng.close()

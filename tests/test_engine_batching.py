"""The engine on the real bundled model: overlap, admission, priority, preemption, truncation, abort."""

from __future__ import annotations

import asyncio
import time

import pytest

from koboldtui.engine.batch_plan import BatchPlan
from koboldtui.engine.llama_engine import EngineConfig, LlamaEngine
from koboldtui.engine.types import (
    FinishReason,
    GenerationRequest,
    Origin,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
)

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def engine(bundled_model):
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=512, parallel=4, batch=BatchPlan(64), threads=2))
    yield eng
    eng.close()


def req(prompt: str = "Once upon a time", n: int = 16, **kw) -> GenerationRequest:
    kw.setdefault("sampling", GREEDY)
    return GenerationRequest(prompt=prompt, max_tokens=n, ban_eos=True, **kw)


async def timed(handle):
    first = None
    async for _ in handle.stream():
        if first is None:
            first = time.monotonic()
    result = await handle.result()
    return first, time.monotonic(), result


async def test_concurrent_requests_overlap(engine):
    handles = [engine.submit(req(f"Story number {i}:", 24)) for i in range(4)]
    runs = await asyncio.gather(*(timed(h) for h in handles))
    firsts = [r[0] for r in runs]
    ends = [r[1] for r in runs]
    # Every request produced its first token before any request finished: they ran together.
    assert max(firsts) < min(ends)
    assert all(r[2].completion_tokens == 24 and r[2].finish_reason is FinishReason.LENGTH for r in runs)


async def test_late_request_joins_at_next_step(engine):
    long = engine.submit(req("A long tale begins", 80))
    stream = long.stream()
    for _ in range(5):
        await stream.__anext__()
    late = engine.submit(req("Hi", 4))
    late_first, _, late_result = await timed(late)
    async for _ in stream:
        pass
    long_result = await long.result()
    assert late_result.completion_tokens == 4
    # The late request started and finished while the long one was still generating.
    assert late_result.finished_at < long_result.finished_at
    assert late_first is not None


async def test_greedy_is_deterministic_and_seed_repeats(engine):
    a = await engine.submit(req("The sky is", 12)).result()
    b = await engine.submit(req("The sky is", 12)).result()
    assert a.text == b.text and a.text
    seeded = SamplingParams(temperature=1.0, seed=1234)
    c = await engine.submit(req("Colors:", 12, sampling=seeded)).result()
    d = await engine.submit(req("Colors:", 12, sampling=seeded)).result()
    assert c.text == d.text and c.seed == 1234


async def test_stop_sequence_cuts_text(engine):
    base = await engine.submit(req("1, 2, 3, 4,", 20)).result()
    assert "," in base.text
    stop_at = base.text.index(",")
    cut = await engine.submit(req("1, 2, 3, 4,", 20, stop=(",",))).result()
    assert cut.finish_reason is FinishReason.STOP
    assert cut.text == base.text[:stop_at]


async def test_long_prompt_truncated_from_left(engine):
    prompt = "word " * 2000  # far longer than the 512-token context
    result = await engine.submit(req(prompt, 8)).result()
    assert result.truncated_tokens > 1000
    assert result.prompt_tokens <= 512 - 8
    assert result.completion_tokens == 8


async def test_prompt_too_long_refused_without_truncation(engine):
    with pytest.raises(PromptTooLongError) as err:
        engine.submit(req("word " * 2000, 8, truncate_prompt=False))
    assert "maximum context length is 512" in str(err.value)


async def test_abort_frees_the_slot(engine):
    handle = engine.submit(req("Count forever:", 400))
    stream = handle.stream()
    await stream.__anext__()
    assert engine.abort(handle.genkey)
    result = await handle.result()
    assert result.finish_reason is FinishReason.ABORT
    assert result.completion_tokens < 400
    assert engine.snapshot().slots_busy == 0
    assert not engine.abort("no-such-key")


async def test_snapshot_reports_batch_plan_and_queue(engine):
    handle = engine.submit(req("Status check", 30))
    stream = handle.stream()
    await stream.__anext__()
    snap = engine.snapshot()
    assert (snap.n_batch, snap.n_ubatch, snap.parallel, snap.n_ctx_per_seq) == (64, 64, 4, 512)
    entry = next(e for e in snap.queue if e.genkey == handle.genkey)
    assert entry.origin is Origin.LOCAL and entry.state.value == "generating"
    handle.abort()
    await handle.result()


def test_batch_plan_ubatch_rule():
    assert BatchPlan(512).n_ubatch == 512
    assert BatchPlan(4096).n_ubatch == 1024
    with pytest.raises(ValueError):
        BatchPlan(0)


@pytest.fixture
def single_slot(bundled_model, request):
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=256, parallel=1, batch=BatchPlan(64),
                                   threads=2, max_queue=2, preempt=getattr(request, "param", False)))
    yield eng
    eng.close()


async def test_local_requests_jump_the_horde_queue(single_slot):
    busy = single_slot.submit(req("Busy", 20, origin=Origin.HORDE))
    await busy.stream().__anext__()  # it holds the only slot now
    horde = single_slot.submit(req("Horde job", 4, origin=Origin.HORDE))
    local = single_slot.submit(req("Local", 4))
    results = await asyncio.gather(busy.result(), horde.result(), local.result())
    assert results[2].finished_at < results[1].finished_at  # local served before the earlier Horde job
    with pytest.raises(QueueFullError):
        for _ in range(5):
            single_slot.submit(req("x", 200))


@pytest.mark.parametrize("single_slot", [True], indirect=True)
async def test_local_preempts_a_horde_sequence(single_slot):
    horde = single_slot.submit(req("The Horde story", 60, origin=Origin.HORDE))
    stream = horde.stream()
    for _ in range(3):
        await stream.__anext__()
    local = await single_slot.submit(req("Local", 5)).result()
    async for _ in stream:
        pass
    horde_result = await horde.result()
    assert local.finished_at < horde_result.finished_at
    assert horde_result.completion_tokens == 60  # resumed after the local request, not lost


async def test_time_to_first_token_under_load_is_printed(bundled_model):
    """TTFT of a short local request idle vs while 7 long ones generate (the target is 2x;
    this shared 2-core VM is too noisy for a tight assert, so the ratio is printed and only
    a gross regression — e.g. waiting for a long request to finish — fails)."""
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=512, parallel=8, threads=2))
    try:
        async def short() -> float:
            t0 = time.monotonic()
            handle = eng.submit(req("Hello there", 2))
            async for _ in handle.stream():
                break
            await handle.result()
            return time.monotonic() - t0

        idle = sorted([await short() for _ in range(3)])[1]
        longs = [eng.submit(req(f"Story {i}:", 400)) for i in range(7)]
        await asyncio.sleep(0.5)
        loaded = sorted([await short() for _ in range(3)])[1]
        print(f"\nTTFT idle {idle * 1000:.0f} ms, with 7 long requests {loaded * 1000:.0f} ms "
              f"= {loaded / idle:.1f}x")
        assert all(not h.done() for h in longs)  # the short ones never waited for a long one
        assert loaded < 10 * idle + 1.0
        for h in longs:
            h.abort()
    finally:
        eng.close()


async def test_local_arrivals_interrupt_the_step_without_changing_anyones_text(bundled_model):
    """A new short local request cuts the step in flight short (llama.cpp rolls it back) so its
    first token does not wait a whole step; the interrupted sequences must come out exactly as
    if nothing had happened."""
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=512, parallel=8, threads=2))
    try:
        prompts = [f"Chapter {i}. The ship" for i in range(5)]
        # Once to fill the slots' prompt cache, so both compared runs are warm: a cold and a warm
        # run feed the last prompt token in different batch shapes (llama.cpp's rounding differs).
        await asyncio.gather(*(eng.submit(req(p, 2)).result() for p in prompts))
        alone = [r.text for r in await asyncio.gather(*(eng.submit(req(p, 96)).result() for p in prompts))]
        handles = [eng.submit(req(p, 96)) for p in prompts]
        stream = handles[0].stream()
        await stream.__anext__()
        shorts = []
        for i in range(30):  # until one lands mid-step (on a loaded machine the phase varies)
            shorts.append(await eng.submit(req(f"Quick {i}", 2)).result())
            if eng.interrupted_steps and i >= 5:
                break
            await asyncio.sleep(0.003 * (i % 7))
        async for _ in stream:
            pass
        together = [(await h.result()).text for h in handles]
        assert eng.interrupted_steps > 0
        assert together == alone
        assert all(s.completion_tokens == 2 for s in shorts)
    finally:
        eng.close()


async def test_aborting_a_queued_request_answers_at_once_and_frees_its_place(single_slot):
    running = single_slot.submit(req("Busy", 150))
    await running.stream().__anext__()  # holds the only slot
    queued = [single_slot.submit(req(f"Waiting {i}", 4)) for i in range(2)]  # the queue (2) is full
    with pytest.raises(QueueFullError):
        single_slot.submit(req("One too many", 4))
    assert single_slot.abort(queued[1].genkey)
    result = await asyncio.wait_for(queued[1].result(), timeout=5)
    assert result.finish_reason is FinishReason.ABORT and not running.done()
    extra = single_slot.submit(req("Now there is room", 4))  # no QueueFullError any more
    running.abort()
    assert (await extra.result()).completion_tokens == 4
    assert (await queued[0].result()).completion_tokens == 4


async def test_tiny_context_request_still_generates(engine):
    result = await engine.submit(req("A long prompt " * 20, 5, max_context=1)).result()
    assert result.prompt_tokens >= 1 and result.completion_tokens == 1


def test_ctx_beyond_the_trained_context_is_clamped(bundled_model):
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=65536, parallel=1, batch=BatchPlan(64)))
    try:
        assert eng.n_ctx_per_seq == 32768  # Gemma 3 270M's trained context
    finally:
        eng.close()


def test_the_longest_token_is_read_at_start_not_in_the_first_long_prompts_ttft(engine):
    """A prompt over 4 KB is checked against the vocabulary's longest token (text_bounds.py): the
    engine reads it in the background at start, so no request pays that pass over 262k tokens."""
    from koboldtui.engine import sampling

    engine._bounds.join(timeout=60)
    assert not engine._bounds.is_alive()
    longest = sampling._longest[id(engine.vocab)]
    pieces = [engine.vocab.piece(t) for t in (engine.vocab.eos, *engine.tokenize("The lighthouse keeper"))]
    assert 16 <= longest < 256 and all(len(p) <= longest for p in pieces)

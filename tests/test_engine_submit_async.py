"""LlamaEngine.submit_async: tokenizing off the loop keeps submit's answers and errors.

A full queue is refused before any tokenizing; a submitter cancelled while its prompt is
prepared leaves no sampler behind and nothing queued.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from koboldtui.engine.batch_plan import BatchPlan
from koboldtui.engine.llama_engine import EngineConfig, LlamaEngine
from koboldtui.engine.types import (
    GenerationRequest,
    PromptTooLongError,
    QueueFullError,
    SamplingParams,
)


@pytest.fixture(scope="module")
def engine(bundled_model):
    eng = LlamaEngine(EngineConfig(model_path=bundled_model, ctx=256, parallel=1, batch=BatchPlan(64),
                                   threads=2, max_queue=1))
    yield eng
    eng.close()


def req(prompt: str, n: int = 4, **kw) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_tokens=n, ban_eos=True,
                             sampling=SamplingParams(temperature=0.0), **kw)


@pytest.mark.slow
async def test_same_text_and_errors_as_submit(engine):
    sync = await engine.submit(req("The sky is", 6)).result()
    off_loop = await (await engine.submit_async(req("The sky is", 6))).result()
    assert off_loop.text == sync.text and off_loop.completion_tokens == 6
    with pytest.raises(PromptTooLongError):
        await engine.submit_async(req("word " * 400, 8, truncate_prompt=False))


@pytest.mark.slow
async def test_full_queue_is_refused_before_tokenizing(engine, monkeypatch):
    running = await engine.submit_async(req("Busy", 200))
    await running.stream().__anext__()  # holds the only slot
    queued = await engine.submit_async(req("Waiting"))  # the queue (1) is full now
    prepared: list[GenerationRequest] = []
    real = engine._preparer.prepare
    monkeypatch.setattr(engine._preparer, "prepare", lambda r: (prepared.append(r), real(r))[1])
    with pytest.raises(QueueFullError):
        await engine.submit_async(req("One too many"))
    assert prepared == []
    running.abort()
    queued.abort()
    await asyncio.gather(running.result(), queued.result())


@pytest.mark.slow
async def test_cancelled_while_preparing_frees_its_sampler(engine, monkeypatch):
    release, built = threading.Event(), []
    real = engine._preparer.prepare

    def slow(r):
        release.wait(10)
        built.append(real(r))
        return built[-1]

    monkeypatch.setattr(engine._preparer, "prepare", slow)
    task = asyncio.create_task(engine.submit_async(req("Never queued")))
    await asyncio.sleep(0.05)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the worker thread finishes, then the loop frees the sampler
        if built and built[0].sampler._chain is None:
            break
        await asyncio.sleep(0.02)
    assert built and built[0].sampler._chain is None
    assert engine.snapshot().queue_depth == 0

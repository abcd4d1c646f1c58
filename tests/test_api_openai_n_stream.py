"""OpenAI ``n`` > 1 with ``stream: true`` over real HTTP on the real model: one stream, choices
interleaved by ``index``, one finish per choice, one usage chunk, and a disconnect that frees
every choice's slot."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from koboldtui.config import ServeConfig
from koboldtui.status import InstanceStatus
from tests.instance_harness import running_instance, wait_for

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")

MODEL = "koboldcpp/gemma-3-270m-q4_k_m"
NO_EOS = {"1": -100, "106": -100}  # Gemma's <eos> and <end_of_turn>: every choice runs to max_tokens


@pytest.fixture(scope="module")
def instance(shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(ServeConfig(ctx=256, parallel=3, batch_size=64, max_queue=8), model) as (base, rt):
        yield base, rt


def events(response: httpx.Response) -> list[dict | str]:
    out: list[dict | str] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_completions_stream_interleaves_choices_and_matches_the_plain_answer(instance):
    base, rt = instance
    body = {"prompt": "The three best things about autumn are", "max_tokens": 16, "n": 3,
            "temperature": 0, "logit_bias": NO_EOS}
    shared_before = rt.engine.snapshot().totals.prompts_shared
    plain = httpx.post(base + "/v1/completions", json=body, timeout=120).json()
    # the three choices are queued as one unit: the prompt is fed once, two choices copy its KV
    assert rt.engine.snapshot().totals.prompts_shared == shared_before + 2
    with httpx.stream("POST", base + "/v1/completions", timeout=120,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200, r.read()
        got = events(r)
    assert got[-1] == "[DONE]"
    usage = got[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 48
    assert usage["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    chunks = got[:-2]
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in chunks)
    order = [c["choices"][0]["index"] for c in chunks]
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks
                if c["choices"][0]["finish_reason"]]
    assert sorted(finishes) == [(0, "length"), (1, "length"), (2, "length")]
    first_finish = next(i for i, c in enumerate(chunks) if c["choices"][0]["finish_reason"])
    assert set(order[:first_finish]) == {0, 1, 2}  # side by side, not one choice after another
    texts = ["".join(c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == i) for i in range(3)]
    assert texts == [c["text"] for c in plain["choices"]] and texts[0]
    assert rt.engine.snapshot().totals.prompts_shared == shared_before + 4


def test_chat_stream_with_the_openai_client(instance):
    client = openai.OpenAI(base_url=instance[0] + "/v1", api_key="unused", timeout=120, max_retries=0)
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6,
              "n": 2, "temperature": 0, "logit_bias": NO_EOS}
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    texts, roles, finishes = ["", ""], {}, {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        roles.setdefault(choice.index, choice.delta.role)  # the first chunk of each choice
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert roles == {0: "assistant", 1: "assistant"} and finishes == {0: "length", 1: "length"}
    assert texts == [c.message.content for c in plain.choices] and texts[0]


def test_disconnect_aborts_every_choice_and_frees_the_slots(instance):
    base, runtime = instance
    before = runtime.engine.snapshot().totals.aborted
    body = {"prompt": "A very long story:", "max_tokens": 200, "n": 3, "stream": True,
            "temperature": 0.8, "logit_bias": NO_EOS}
    with httpx.stream("POST", base + "/v1/completions", json=body, timeout=120) as r:
        seen = set()
        busy = None
        for line in r.iter_lines():
            if line.startswith("data: {"):
                seen.add(json.loads(line[6:])["choices"][0]["index"])
            if len(seen) == 3:
                # Asked while the stream is still being read: leaving this loop drops the
                # line iterator, which closes the connection (the disconnect under test).
                busy = InstanceStatus.from_dict(httpx.get(base + "/api/koboldtui/status").json()).engine.slots_busy
                break
        assert busy == 3
    wait_for(lambda: runtime.engine.snapshot().totals.aborted >= before + 3, timeout=15, what="3 aborts")
    status = wait_for(lambda: (s := InstanceStatus.from_dict(httpx.get(base + "/api/koboldtui/status").json()))
                      .engine.slots_busy == 0 and s, timeout=15, what="idle slots")
    assert status.engine.slots_busy == 0 and status.engine.queue_depth == 0
    time.sleep(0.2)
    assert runtime.engine.snapshot().totals.aborted == before + 3

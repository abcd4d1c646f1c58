"""The official ``openai`` client against the real model: structured output, logprobs, usage
chunks, turn-marker stops, models.retrieve, and clear refusals for what is not supported."""

from __future__ import annotations

import json

import httpx
import pytest

from koboldtui.config import ServeConfig
from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow
openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def instance(shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(ServeConfig(ctx=512, parallel=2, batch_size=64, max_queue=8), model) as (base, rt):
        yield base, rt


@pytest.fixture
def client(instance):
    return openai.OpenAI(base_url=instance[0] + "/v1", api_key="unused", timeout=120, max_retries=0)


MODEL = "koboldcpp/gemma-3-270m-q4_k_m"


def test_json_schema_output_parses(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=40,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    data = json.loads(chat.choices[0].message.content)
    assert set(data) == {"name", "age"} and isinstance(data["age"], int)
    obj = client.completions.create(model=MODEL, prompt="A JSON object:", max_tokens=6, temperature=0,
                                    extra_body={"response_format": {"type": "json_object"}})
    assert obj.choices[0].text.lstrip().startswith("{")


def test_logprobs_on_both_routes(client):
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=4, logprobs=True, top_logprobs=3, temperature=0)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)
    comp = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=3, logprobs=2, temperature=0)
    lp = comp.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 3 and all(len(t) == 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == comp.choices[0].text


def test_usage_chunk_arrives_when_asked(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True,
        stream_options={"include_usage": True}, logprobs=True, top_logprobs=2))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])
    streamed = [lp for c in chunks[:-1] if c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
    assert len(streamed) == chunks[-1].usage.completion_tokens  # all of them, in the last choice chunk


def test_chat_stops_at_a_turn_marker_and_has_a_sane_default_length(client):
    # the bundled base model has no chat template: it gets the plain transcript, and left alone
    # it writes the user's next line; the turn marker ends the answer there
    chat = client.chat.completions.create(model=MODEL, temperature=0, messages=[
        {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Tell me a joke."}])
    text = chat.choices[0].message.content
    assert text.strip() and "\nuser:" not in text and "\nUser:" not in text
    # without the stop it goes on ("...\nuser: I'm sorry...") until max_tokens
    assert chat.choices[0].finish_reason == "stop" and chat.usage.completion_tokens < 40


def test_models_retrieve_and_tools_refused(client):
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert "tools" in str(err.value)


def test_lenient_inputs(instance):
    base, _ = instance
    r = httpx.post(base + "/v1/completion", timeout=120, json={
        "prompt": "Hi", "max_tokens": "3", "temperature": "0", "stop": [None, "zz"] + [f"s{i}" for i in range(20)]})
    assert r.status_code == 200, r.text
    bad = httpx.post(base + "/v1/chat/completions", timeout=60, content='{"messages": [{"role": "user", '
                     '"content": "\\udc00"}]}', headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "surrogate" in bad.json()["error"]["message"]
    greedy = httpx.post(base + "/v1/completions", timeout=120, json={
        "prompt": "The sky is", "max_tokens": 4, "temperature": 1e-38}).json()
    zero = httpx.post(base + "/v1/completions", timeout=120, json={
        "prompt": "The sky is", "max_tokens": 4, "temperature": 0}).json()
    assert greedy["choices"][0]["text"] == zero["choices"][0]["text"] != ""

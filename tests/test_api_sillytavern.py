"""SillyTavern's real request bodies, replayed against a real instance (real model, real HTTP).

The bodies in tests/sillytavern/ are what SillyTavern 1.12.6 sends in its three modes
(each file's ``_source`` says where in its source the body is built): "Text Completion →
KoboldCpp" (/v1/completions with KoboldCpp's fields), "KoboldAI Classic" (/api/v1/generate)
and "Chat Completion → Custom" (/v1/chat/completions). A test changes only what a user would
set in SillyTavern's sliders (greedy sampling, a grammar, banned strings).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from koboldtui.config import ServeConfig
from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow
BODIES = Path(__file__).with_name("sillytavern")
CTX = 256
# A chat far longer than the context (SillyTavern's own context setting is 8192), whose last
# line can only be finished by a model that still sees the end of it.
LONG_CHAT = "You: hello there\nBot: hi, how are you?\n" * 220 + (
    "You: The password is Bartholomew. The password is Bartholomew. The password is")


# SillyTavern's sliders at greedy, no repetition penalty (it sends the one value under three names)
GREEDY = {"temperature": 0, "rep_pen": 1.0, "repetition_penalty": 1.0, "repeat_penalty": 1.0}


def st_body(name: str, **changes) -> dict:
    """A SillyTavern body with the test's prompt/messages and the slider changes filled in."""
    body = {k: v for k, v in json.loads((BODIES / f"{name}.json").read_text()).items() if not k.startswith("_")}
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def client(shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(ServeConfig(ctx=CTX, parallel=2, batch_size=64, max_queue=8), model) as (base, _):
        with httpx.Client(base_url=base, timeout=120) as c:
            yield c


def completion(client, body: dict) -> dict:
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_textgen_koboldcpp_long_chat_is_cut_from_the_front(client):
    body = st_body("textgen_koboldcpp", prompt=LONG_CHAT, max_tokens=4, **GREEDY)
    out = completion(client, body)
    choice = out["choices"][0]
    assert out["usage"]["prompt_tokens"] <= CTX - 4, out["usage"]
    assert "Barth" in choice["text"], choice  # the end of the chat survived the cut
    # "Request token probabilities" (logprobs 10): answered, with KoboldCpp's 5 alternatives
    assert len(choice["logprobs"]["top_logprobs"][0]) == 5, choice["logprobs"]
    # streamed as SillyTavern does with streaming on
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    text = "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1])
    assert lines[-1] == "data: [DONE]" and "Barth" in text


def test_textgen_koboldcpp_memory_is_kept_when_the_chat_is_cut(client):
    memory = "The captain's name is Sir Bartholomew. The captain's name is Sir Bartholomew.\n"
    prompt = "You: hi\nBot: hello\n" * 200 + "You: Who is the captain?\nBot: The captain's name is Sir"
    out = completion(client, st_body("textgen_koboldcpp", prompt=prompt, memory=memory, max_tokens=4,
                                     **GREEDY))
    assert "Barth" in out["choices"][0]["text"], out


def test_a_plain_openai_body_still_gets_context_length_exceeded(client):
    r = client.post("/v1/completions", json={"prompt": LONG_CHAT, "max_tokens": 4})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("route", ["/v1/completions", "/api/v1/generate"])
def test_grammar_is_honoured_on_both_routes(client, route):
    grammar = 'root ::= "yes" | "no"'
    for seed in (1, 2):
        if route == "/v1/completions":
            body = st_body("textgen_koboldcpp", prompt="Is the sky blue? Answer:", grammar=grammar,
                           temperature=1.0, seed=seed, sampler_seed=seed)
            text = completion(client, body)["choices"][0]["text"]
        else:
            body = st_body("kai_classic", prompt="Is the sky blue? Answer:", grammar=grammar, sampler_seed=seed)
            r = client.post(route, json=body)
            assert r.status_code == 200, r.text
            text = r.json()["results"][0]["text"]
        assert text in ("yes", "no"), (route, text)


COUNTING = "one, two, three, four,"


def _texts(client, route: str, **changes) -> str:
    if route == "/v1/completions":
        body = st_body("textgen_koboldcpp", prompt=COUNTING, max_tokens=6, **GREEDY, **changes)
        return completion(client, body)["choices"][0]["text"]
    body = st_body("kai_classic", prompt=COUNTING, max_length=6, **GREEDY, **changes)
    r = client.post(route, json=body)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["text"]


@pytest.mark.parametrize("route", ["/v1/completions", "/api/v1/generate"])
def test_banned_strings_and_token_bans_are_honoured_on_both_routes(client, route):
    assert "five" in _texts(client, route).lower()  # what the model says unbanned
    assert "five" not in _texts(client, route, banned_strings=["five"]).lower()
    # SillyTavern's "banned tokens" box: ids as "a,b" (tokencount with special false gives them)
    ids = client.post("/api/extra/tokencount", json={"prompt": " five", "special": False}).json()["ids"]
    assert "five" not in _texts(client, route, custom_token_bans=",".join(map(str, ids))).lower()


def test_tokencount_special_false_adds_no_bos(client):
    with_bos = client.post("/api/extra/tokencount", json={"prompt": "ghost"}).json()
    without = client.post("/api/extra/tokencount", json={"prompt": "ghost", "special": False}).json()
    assert with_bos["ids"][1:] == without["ids"] and without["value"] == with_bos["value"] - 1


def test_chat_completion_custom_body_with_logprobs(client):
    body = st_body("chat_completion_custom", messages=[
        {"role": "system", "content": "You are Bot, a friendly assistant."},
        {"role": "user", "content": "Say hello."}])
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert all(len(t["top_logprobs"]) == 5 for t in choice["logprobs"]["content"]), choice


def test_version_lists_what_each_route_ignores(client):
    ignored = client.get("/api/extra/version").json()["ignored_fields"]
    assert {"/api/v1/generate", "/v1/completions", "/v1/chat/completions"} <= set(ignored)
    assert "tfs" in ignored["/v1/completions"] and "grammar" not in ignored["/v1/completions"]
    assert "memory" in ignored["/v1/chat/completions"] and "memory" not in ignored["/v1/completions"]


def test_lite_bypass_eos_and_render_special(client):
    bos = client.post("/api/extra/tokencount", json={"prompt": "", "special": True}).json()["ids"]
    assert bos == [2]  # the bundled Gemma 3: BOS 2, EOS 1
    forced = {"prompt": "The end.", "max_length": 4, "logit_bias": {"1": 100}, **GREEDY}
    stopped = client.post("/api/v1/generate", json=forced).json()["results"][0]
    assert stopped["completion_tokens"] == 0 and stopped["finish_reason"] == "stop"
    bypassed = client.post("/api/v1/generate", json={**forced, "bypass_eos": True}).json()["results"][0]
    assert bypassed["completion_tokens"] == 4 and bypassed["finish_reason"] == "length"
    assert bypassed["text"] == ""  # EOS sampled four times, never shown
    shown = client.post("/api/v1/generate", json={**forced, "bypass_eos": True, "render_special": True})
    assert shown.json()["results"][0]["text"] == "<eos>" * 4
    body = st_body("textgen_koboldcpp", prompt="The end.", max_tokens=2, logit_bias={"1": 100},
                   bypass_eos=True, render_special=True, **GREEDY)
    assert completion(client, body)["choices"][0]["text"] == "<eos>" * 2  # the same on /v1/completions

"""Each KoboldCpp field changes the real model's output the way KoboldCpp's does, over real HTTP."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from koboldtui.config import ServeConfig
from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow
GREEDY = {"temperature": 0, "rep_pen": 1.0, "sampler_seed": 1}


@pytest.fixture(scope="module")
def instance(shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(ServeConfig(ctx=256, parallel=2, batch_size=64, max_queue=8), model) as (base, rt):
        yield base, rt


@pytest.fixture
def client(instance):
    with httpx.Client(base_url=instance[0], timeout=120) as c:
        yield c


def gen(client, **body) -> dict:
    r = client.post("/api/v1/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def test_grammar_yields_exactly_one_of_its_words(client):
    for seed in (1, 2, 3):
        out = gen(client, prompt="Is the sky blue? Answer:", max_length=8, temperature=1.0, sampler_seed=seed,
                  grammar='root ::= "yes" | "no"')
        assert out["text"] in ("yes", "no"), out
    bad = client.post("/api/v1/generate", json={"prompt": "x", "grammar": "root ::= (", "max_length": 2})
    assert bad.status_code == 400 and "grammar" in bad.json()["error"]


def test_memory_reaches_the_model_and_survives_truncation(client):
    plain = gen(client, prompt="Our hero's name is Sir", max_length=4, **GREEDY)
    told = gen(client, memory="The hero is Sir Bartholomew. The hero is Sir Bartholomew. ",
               prompt="Our hero's name is Sir", max_length=4, **GREEDY)
    assert told["prompt_tokens"] > plain["prompt_tokens"]
    assert "Barth" in told["text"] and told["text"] != plain["text"]
    # a prompt far beyond the context: the story's start goes, the memory stays
    long = gen(client, memory="The hero is Sir Bartholomew. The hero is Sir Bartholomew. ",
               prompt="The road was long. " * 60 + "Our hero's name is Sir", max_length=4, **GREEDY)
    assert long["prompt_tokens"] <= 256 - 4 and "Barth" in long["text"]


def test_use_default_badwordsids_bans_eos(instance, client):
    eos = instance[1].engine.vocab.eos
    likely_end = {"prompt": "The end.", "max_length": 5, "logit_bias": {str(eos): 100}, **GREEDY}
    free = gen(client, **likely_end)
    banned = gen(client, use_default_badwordsids=True, **likely_end)
    assert free["completion_tokens"] == 0 and free["finish_reason"] == "stop"
    assert banned["completion_tokens"] == 5 and banned["finish_reason"] == "length"


def test_max_length_beyond_context_is_lowered_not_the_prompt(client):
    out = gen(client, prompt="Once upon a time there was a little fox who", max_length=1000,
              max_context_length=40, ban_eos_token=True, **GREEDY)
    assert out["prompt_tokens"] > 5  # KoboldCpp keeps at least 16 tokens of room for the prompt
    assert out["completion_tokens"] == 40 - 16


def test_trim_stop_false_keeps_the_stop_and_perf_says_custom_stop(client):
    body = dict(prompt="1, 2, 3, 4,", max_length=8, stop_sequence=[None, ","] + [f"zz{i}" for i in range(40)],
                **GREEDY)
    trimmed = gen(client, **body)
    kept = gen(client, trim_stop=False, **body)
    assert not trimmed["text"].endswith(",") and kept["text"] == trimmed["text"] + ","
    perf = client.get("/api/extra/perf").json()
    assert perf["stop_reason"] == 2 and perf["idle"] == 1 and perf["idletime"] >= 0
    assert {"last_process", "last_eval", "total_img_gens", "hordeexitcounter"} <= set(perf)


def test_samplers_change_the_output(client):
    base = {"prompt": "The cat sat on the", "max_length": 6, "ban_eos_token": True, "temperature": 1.0, "sampler_seed": 5}
    plain = gen(client, **base)["text"]
    variants = {
        "mirostat2": {"mirostat": 2, "mirostat_tau": 3.0},
        "xtc": {"xtc_probability": 1.0, "xtc_threshold": 0.05},
        "dynatemp": {"dynatemp_range": 0.9},
        "order": {"sampler_order": [5, 6, 0, 1, 3, 4, 2], "top_k": 3},
    }
    for name, extra in variants.items():
        out = gen(client, **base, **extra)
        assert out["completion_tokens"] == 6, name
    greedy = gen(client, prompt="one one one one one one", max_length=6, **GREEDY)["text"]
    dry = gen(client, prompt="one one one one one one", max_length=6, dry_multiplier=3.0, dry_allowed_length=1,
              dry_sequence_breakers='["\\n"]', **GREEDY)["text"]
    assert "one" in greedy and dry != greedy
    penalised = gen(client, prompt="one one one one one one", max_length=6, repetition_penalty=3.0,
                    temperature=0, sampler_seed=1)["text"]
    assert penalised != greedy  # the penalty sees the prompt's "one"s (issue 9 item 5)
    assert plain


def test_logit_bias_and_banned_tokens(client):
    first = gen(client, prompt="The capital of France is", max_length=1, logprobs=True, **GREEDY)
    token_id = first["logprobs"]["content"][0]["token_id"]
    other = gen(client, prompt="The capital of France is", max_length=1, logit_bias={str(token_id): -100},
                logprobs=True, **GREEDY)
    assert other["logprobs"]["content"][0]["token_id"] != token_id
    word = first["text"].strip()
    banned = gen(client, prompt="The capital of France is", max_length=3, banned_tokens=[word[:1]], **GREEDY)
    assert word[:1].lower() not in banned["text"].lower()


def test_tokenize_detokenize_and_last_logprobs(client):
    ids = client.post("/api/extra/tokenize", json={"prompt": "hello world"}).json()["ids"]
    assert client.post("/api/extra/detokenize", json={"ids": ids}).json() == {"result": "hello world", "success": True}
    for bad in ([-1], [10**9], ["a"]):
        assert client.post("/api/extra/detokenize", json={"ids": bad}).status_code == 400
    r = client.post("/api/v1/generate", json={"prompt": "x", "max_length": 1, "logit_bias": {"999999999": 5}})
    assert r.status_code == 400 and "logit_bias" in r.json()["error"]
    out = gen(client, prompt="Hello", max_length=3, genkey="LPKEY1", logprobs=True, ban_eos_token=True, **GREEDY)
    content = client.post("/api/extra/last_logprobs", json={"genkey": "LPKEY1"}).json()["logprobs"]["content"]
    assert len(content) == 3 and content == out["logprobs"]["content"]
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 5 for e in content)
    assert content[0]["top_logprobs"][0]["logprob"] >= content[0]["top_logprobs"][1]["logprob"]
    assert client.post("/api/extra/last_logprobs", json={}).json()["logprobs"]["content"] == []


def test_check_never_shows_another_clients_text(instance):
    base, _ = instance
    done = threading.Event()

    def run():
        httpx.post(base + "/api/v1/generate", timeout=120, json={
            "prompt": "Count to a thousand:", "max_length": 16, "ban_eos_token": True, "genkey": "SECRET1"})
        done.set()

    threading.Thread(target=run).start()
    seen_own, deadline = "", time.monotonic() + 60
    while not done.is_set() and time.monotonic() < deadline:
        assert httpx.get(base + "/api/extra/generate/check").json()["results"][0]["text"] == ""
        assert httpx.post(base + "/api/extra/generate/check", json={"genkey": "OTHER"}).json()["results"][0]["text"] == ""
        seen_own = seen_own or httpx.post(base + "/api/extra/generate/check",
                                          json={"genkey": "SECRET1"}).json()["results"][0]["text"]
        time.sleep(0.05)
    assert done.wait(60) and seen_own


def test_lenient_inputs_and_kobold_shapes(client):
    out = gen(client, prompt="Hi", max_length="3", sampler_seed="42", temperature="0.5", ban_eos_token=True)
    assert out["completion_tokens"] == 3
    r = client.post("/api/latest/generate/", json={"prompt": "Hi", "max_length": 2})
    assert r.status_code == 200
    abort = client.post("/api/extra/abort", json={"genkey": "NOPE"}).json()
    assert abort == {"success": "false", "done": "false"}
    r = client.post("/api/v1/generate", content='{"prompt": "\\ud800"}', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "surrogate" in r.json()["error"]


def test_koboldapi_client_calls_all_succeed(instance):
    koboldapi = pytest.importorskip("koboldapi")
    api = koboldapi.KoboldAPI(instance[0])
    assert api.generate("Hello", max_length=4, logprobs=True, ban_eos_token=True)
    ids = api.tokenize("hello world")
    assert api.detokenize(ids) == "hello world"
    assert api.count_tokens("hello")["count"] >= 1
    assert isinstance(api.get_last_logprobs(), dict)
    assert api.get_version()["result"] == "KoboldCpp"
    assert api.get_model().startswith("koboldcpp/")
    assert api.get_performance_stats()["total_gens"] >= 1
    assert api.get_max_context_length() == 256
    assert api.check_generation() and api.abort_generation() in ("false", False)  # its own text, done
    assert "".join(api.generate_sync("Hello", max_length=3, ban_eos_token=True))


def test_megabyte_prompts_are_cut_before_tokenizing_and_health_keeps_answering(instance):
    base, _ = instance
    big = "word " * 1_600_000  # 8 MB: tokenizing all of it would stall the server for seconds
    result: dict = {}

    def send():
        result["kobold"] = httpx.post(base + "/api/v1/generate", timeout=120,
                                      json={"prompt": big, "max_length": 1, "memory": "Memory. ",
                                            "max_context_length": 64})
        result["openai"] = httpx.post(base + "/v1/completions", timeout=120, json={"prompt": big, "max_tokens": 1})

    thread = threading.Thread(target=send)
    thread.start()
    slowest = 0.0
    while thread.is_alive():
        t = time.monotonic()
        assert httpx.get(base + "/health", timeout=30).status_code == 200
        slowest = max(slowest, time.monotonic() - t)
        time.sleep(0.02)
    thread.join()
    kobold = result["kobold"].json()["results"][0]
    assert result["kobold"].status_code == 200 and kobold["prompt_tokens"] <= 64
    refused = result["openai"].json()["error"]
    assert result["openai"].status_code == 400 and refused["code"] == "context_length_exceeded"
    assert slowest < 1.0, f"/health took {slowest:.2f} s while an 8 MB prompt was handled"


def test_json_to_grammar_feeds_generate(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    answer = client.post("/api/extra/json_to_grammar", json={"schema": schema}).json()
    assert answer["success"] is True and "root" in answer["result"]
    out = gen(client, prompt="Status as JSON:", max_length=12, grammar=answer["result"], **GREEDY)
    assert out["text"].replace(" ", "").startswith('{"ok":')
    assert client.post("/api/extra/json_to_grammar", json={"schema": 5}).status_code == 400


def test_grammar_retain_state_goes_on_where_the_last_request_stopped(client):
    body = {"prompt": "Count:", "max_length": 2, "grammar": 'root ::= "1" "2" "3" "4"', **GREEDY}
    assert gen(client, **body)["text"] == "12"
    assert gen(client, grammar_retain_state=True, **body)["text"] == "12"
    assert gen(client, grammar_retain_state=True, **body)["text"] == "34"  # went on from "12"
    assert gen(client, **body)["text"] == "12"  # without the flag: from the start

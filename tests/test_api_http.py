"""KoboldAI and OpenAI routes over real HTTP on 127.0.0.1, against the real bundled model."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from koboldtui.config import ServeConfig
from koboldtui.status import InstanceStatus
from tests.instance_harness import running_instance


@pytest.fixture(scope="module")
def instance(tmp_path_factory, shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    config = ServeConfig(ctx=256, parallel=4, batch_size=64, max_queue=8)
    with running_instance(config, model) as (base, runtime):
        yield base, runtime


@pytest.fixture
def client(instance):
    base, _ = instance
    with httpx.Client(base_url=base, timeout=60) as c:
        yield c


def test_kobold_generate(client):
    r = client.post("/api/v1/generate", json={"prompt": "Once upon a time", "max_length": 8,
                                              "ban_eos_token": True, "temperature": 0.5, "sampler_seed": 7,
                                              "some_unknown_field": {"x": 1}})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["finish_reason"] == "length" and result["completion_tokens"] == 8 and result["text"]


def test_kobold_info_routes(client):
    assert client.get("/api/v1/model").json()["result"] == "koboldcpp/gemma-3-270m-q4_k_m"
    assert client.get("/api/v1/info/version").json()["result"]
    assert client.get("/api/extra/version").json()["result"] == "KoboldCpp"
    assert client.get("/api/v1/config/max_context_length").json()["value"] == 256
    assert client.get("/api/extra/true_max_context_length").json()["value"] == 256
    assert client.get("/api/v1/config/max_length").json()["value"] > 0
    perf = client.get("/api/extra/perf").json()
    for key in ("last_process", "last_eval", "last_token_count", "total_gens", "queue", "idle",
                "hordeexitcounter", "stop_reason", "uptime"):
        assert key in perf
    count = client.post("/api/extra/tokencount", json={"prompt": "hello world"}).json()
    assert count["value"] == len(count["ids"]) >= 2


def test_kobold_stream_sse(client):
    with client.stream("POST", "/api/extra/generate/stream",
                       json={"prompt": "Hello", "max_length": 6, "ban_eos_token": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert len(events) >= 2
    assert all("token" in e for e in events)
    assert events[-1]["finish_reason"] == "length"
    assert "".join(e["token"] for e in events)


def test_kobold_check_and_abort_by_genkey(instance):
    base, _ = instance
    out = {}

    def run():
        out["r"] = httpx.post(base + "/api/v1/generate", timeout=60, json={
            "prompt": "Count to a thousand:", "max_length": 200, "ban_eos_token": True, "genkey": "KEY123"})

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline and not text:
        text = httpx.post(base + "/api/extra/generate/check", json={"genkey": "KEY123"}).json()["results"][0]["text"]
        time.sleep(0.05)
    assert text, "partial text should be visible while generating"
    abort = httpx.post(base + "/api/extra/abort", json={"genkey": "KEY123"}).json()
    assert abort["success"] == "true"  # KoboldCpp answers with strings
    t.join(30)
    assert out["r"].status_code == 200
    assert out["r"].json()["results"][0]["completion_tokens"] < 200


def test_openai_client_talks_to_the_routes(instance):
    openai = pytest.importorskip("openai")
    base, _ = instance
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
    models = client.models.list()
    model = models.data[0].id
    comp = client.completions.create(model=model, prompt="The ocean is", max_tokens=6, temperature=0)
    assert comp.choices[0].text and comp.usage.completion_tokens <= 6
    chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi"}],
                                          max_tokens=6)
    assert chat.choices[0].message.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, stream=True)]
    assert "".join(pieces)
    text_stream = list(client.completions.create(model=model, prompt="A", max_tokens=4, stream=True))
    assert text_stream[-1].choices[0].finish_reason in ("length", "stop")


def test_openai_prompt_too_long_is_400_with_context_size(client):
    r = client.post("/v1/completions", json={"prompt": "word " * 1000, "max_tokens": 10})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "256" in err["message"]


def test_kobold_prompt_far_longer_than_context_is_truncated(client):
    r = client.post("/api/v1/generate", json={"prompt": "word " * 5000, "max_length": 4, "ban_eos_token": True})
    assert r.status_code == 200
    assert r.json()["results"][0]["prompt_tokens"] <= 256 - 4


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON object"),
    (b"", "empty"),
    (b'{"prompt": "\xff\xfe"}', "UTF-8"),
    (b'{"prompt": 42}', "'prompt' must be a string"),
    (b'{"prompt": "x", "max_length": -5}', "'max_length' must be at least 1"),
    (b'{"prompt": "x", "max_length": 100000000}', "'max_length' must be at most"),  # below: clamped
    (b'{"prompt": "x", "max_length": "ten"}', "'max_length' must be an integer"),
    (b'{"prompt": "x", "temperature": "hot"}', "'temperature' must be a number"),
    (b'{"prompt": "x", "stop_sequence": [1]}', "stop_sequence"),
    (b'{}', "'prompt' is required"),
    (b'{"prompt": "x", "max_length": 1' + b'0' * 5000 + b'}', "could not be read"),
    (b'[' * 100000, "nested too deeply"),
    (b'{"prompt": "x", "temperature": 1' + b'0' * 400 + b'}', "'temperature'"),
    (b'{"prompt": "x", "temperature": NaN}', "finite"),
])
def test_kobold_bad_input_is_a_clear_400(client, body, needle):
    r = client.post("/api/v1/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


@pytest.mark.parametrize("path,body,needle", [
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "role"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "one prompt"),
    ("/v1/completions", {"prompt": "a", "n": 99}, "'n'"),
    ("/v1/completions", {"prompt": "a", "max_tokens": -1}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
     "text parts"),
])
def test_openai_bad_input_is_a_clear_400(client, path, body, needle):
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_unknown_route_is_json_404_and_server_survives(client):
    r = client.get("/nope")
    assert r.status_code == 404 and "no route" in r.json()["error"]
    assert client.get("/health").json() == {"status": "ok"}


def test_status_snapshot_round_trips(client):
    client.post("/api/v1/generate", json={"prompt": "x", "max_length": 2})
    data = client.get("/api/koboldtui/status").json()
    status = InstanceStatus.from_dict(data)
    assert status.engine.n_batch == 64 and status.engine.n_ubatch == 64
    assert status.engine.parallel == 4 and status.engine.n_ctx_per_seq == 256
    assert status.instance.state == "ready" and status.instance.threads >= 1
    assert status.engine.totals.completed >= 1
    assert data["horde"]["state"] == "off"
    # the local request just made shut the Horde window: the countdown is running
    assert 0 < data["horde"]["remaining_s"] <= 20


def test_metrics_prometheus_text(client):
    text = client.get("/metrics").text
    assert "# TYPE koboldtui_requests_total counter" in text
    assert "koboldtui_slots_total 4" in text
    assert "koboldtui_n_batch 64" in text


def test_concurrent_http_requests_overlap(instance):
    base, _ = instance

    async def one(c, i):
        t0 = time.monotonic()
        first = None
        async with c.stream("POST", "/api/extra/generate/stream", json={
                "prompt": f"Tale {i}:", "max_length": 20, "ban_eos_token": True}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:") and first is None:
                    first = time.monotonic()
        return t0, first, time.monotonic()

    async def main():
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            return await asyncio.gather(*(one(c, i) for i in range(4)))

    runs = asyncio.run(main())
    assert max(r[1] for r in runs) < min(r[2] for r in runs)


def test_client_that_goes_away_frees_its_slot(instance):
    base, runtime = instance
    before = runtime.engine.snapshot().totals.aborted
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(base + "/api/v1/generate", timeout=0.5, json={
            "prompt": "A very long story:", "max_length": 250, "ban_eos_token": True})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and runtime.engine.snapshot().totals.aborted == before:
        time.sleep(0.05)
    snap = runtime.engine.snapshot()
    assert snap.totals.aborted == before + 1 and snap.slots_busy == 0

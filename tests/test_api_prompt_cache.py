"""The prompt cache as clients see it: OpenAI usage, the status queue, totals and /metrics."""

from __future__ import annotations

import httpx
import pytest

from koboldtui.config import ServeConfig
from koboldtui.status import InstanceStatus
from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(shared_models_dir):
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(ServeConfig(ctx=256, parallel=2, batch_size=64), model) as (base, _), \
            httpx.Client(base_url=base, timeout=60) as c:
        yield c


def test_second_chat_turn_reports_cached_tokens_everywhere(client):
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    body = {"messages": messages, "max_tokens": 8, "temperature": 0}
    first = client.post("/v1/chat/completions", json=body).json()
    assert first["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    messages += [first["choices"][0]["message"], {"role": "user", "content": "And three more?"}]
    second = client.post("/v1/chat/completions", json={**body, "messages": messages}).json()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] <= cached < second["usage"]["prompt_tokens"]

    status = InstanceStatus.from_dict(client.get("/api/koboldtui/status").json())
    assert any(entry.cached_tokens == cached for entry in status.engine.queue)
    assert status.engine.totals.prompt_tokens_cached >= cached
    metrics = client.get("/metrics").text
    assert f"koboldtui_prompt_tokens_cached_total {status.engine.totals.prompt_tokens_cached}" in metrics
    assert "koboldtui_context_shifts_total 0" in metrics


def test_n_choices_share_one_prompt(client):
    body = {"prompt": "The three best things about autumn are", "max_tokens": 6, "n": 2,
            "temperature": 1.0, "seed": 11}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1] and all(c["text"] for c in data["choices"])
    assert 2 <= data["usage"]["completion_tokens"] <= 12
    again = client.post("/v1/completions", json=body).json()
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in data["choices"]]  # seeded
    greedy = client.post("/v1/completions", json={**body, "temperature": 0}).json()
    assert greedy["choices"][0]["text"] == greedy["choices"][1]["text"]  # the same KV, the same logits
    too_many = client.post("/v1/completions", json={**body, "n": 3})
    assert too_many.status_code == 400 and "--parallel (2)" in too_many.text

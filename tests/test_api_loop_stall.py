"""The event loop never tokenizes: a prompt that takes long to tokenize leaves /health answering.

The prompt sits just under the OpenAI route's byte pre-cut (so it is tokenized) yet holds
far more tokens than the context (so it ends as a 400 with no decoding): all its cost is
the tokenizing, which runs in a worker thread (LlamaEngine.submit_async).
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from koboldtui.config import ServeConfig
from koboldtui.engine.text_bounds import token_bytes_bound
from tests.instance_harness import running_instance

POLL_S = 0.02
MAX_HEALTH_S = 0.2  # tokenizing one such prompt takes ~0.35 s here: on the loop it would show


def _words(n_bytes: int) -> str:
    rng = random.Random(7)
    words = ("alpha", "beta", "gamma", "delta", "story", "the", "quick", "brown", "fox", "lazy", "dog")
    return " ".join(rng.choice(words) for _ in range(n_bytes // 4))[:n_bytes]


@pytest.mark.slow
def test_health_answers_while_a_big_prompt_is_tokenized(bundled_model):
    config = ServeConfig(ctx=8192, parallel=1, batch_size=64)
    with running_instance(config, bundled_model) as (base, runtime):
        bound = token_bytes_bound(runtime.require_engine())
        assert bound
        prompt = _words(bound * 8192 - 64)  # just under the pre-cut: tokenized, then too long
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                while not done.is_set():
                    t0 = time.perf_counter()
                    assert c.get("/health").status_code == 200
                    latencies.append(time.perf_counter() - t0)
                    time.sleep(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        time.sleep(0.3)  # a few answers before the work starts
        t0 = time.perf_counter()
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(2):
                r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 16})
                assert r.status_code == 400, r.text
                assert r.json()["error"]["code"] == "context_length_exceeded"
        busy_s = time.perf_counter() - t0
        time.sleep(0.1)
        done.set()
        poller.join(timeout=30)
        print(f"2 prompts of {len(prompt)} bytes in {busy_s:.2f} s; {len(latencies)} /health answers, "
              f"slowest {max(latencies) * 1000:.0f} ms")
        assert len(latencies) >= 10
        assert max(latencies) < MAX_HEALTH_S, sorted(latencies)[-5:]

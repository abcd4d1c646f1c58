"""``/health`` follows the decode thread: a step stuck in llama.cpp turns it from 200 to 503 "wedged".

The real engine and model; the fault is injected by holding one decode step on an event
(what a hung ``llama_decode`` looks like from outside), then letting it go.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from koboldtui.config import ServeConfig
from koboldtui.control.probe import Health, probe_health
from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow


def test_a_stuck_decode_step_makes_health_say_wedged_and_recovers(bundled_model) -> None:
    config = ServeConfig(ctx=256, parallel=2)
    with running_instance(config, bundled_model) as (base, runtime):
        assert httpx.get(base + "/health").json()["status"] == "ok"
        engine = runtime.engine
        real_step, release = engine._step, threading.Event()

        def stuck_step(active):
            release.wait(30)
            return real_step(active)

        engine._step = stuck_step
        runtime.wedged_after_s = 0.5
        answer: list[httpx.Response] = []
        client = threading.Thread(target=lambda: answer.append(httpx.post(
            base + "/api/v1/generate", json={"prompt": "Hi", "max_length": 4}, timeout=60)))
        client.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                health = httpx.get(base + "/health")
                if health.status_code == 503:
                    break
                time.sleep(0.1)
            assert health.status_code == 503 and health.json()["status"] == "wedged"
            assert "stuck" in health.json()["error"]
            assert probe_health(base) is Health.ERROR  # the watchdog does not count it as an answer
        finally:
            engine._step = real_step
            release.set()
        client.join(timeout=60)
        assert answer and answer[0].status_code == 200
        assert httpx.get(base + "/health").status_code == 200

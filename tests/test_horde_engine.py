"""The Horde worker in a real instance (real engine, bundled model, real HTTP) vs the fake Horde.

Jobs go pop → LlamaEngine → submit; a wrong key leaves local generation working; a local
request gets a slot at once while Horde jobs fill the others.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from koboldtui.config import HordeSettings, ServeConfig

pytest.importorskip("llama_cpp")

from fake_horde import FakeHorde, job_reply

from tests.instance_harness import running_instance

pytestmark = pytest.mark.slow


def horde_config(url: str, key: str = "good-key", **overrides: Any) -> ServeConfig:
    settings = HordeSettings(
        enabled=True,
        api_key=key,
        worker_name="koboldtui-engine-test",
        url=url,
        window_s=0.5,
        threads=2,
    )
    return ServeConfig(ctx=256, parallel=3, batch_size=64, max_queue=8, horde=settings, **overrides)


def wait_until(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def horde() -> Iterator[FakeHorde]:
    with FakeHorde() as fake:
        yield fake


@pytest.fixture(scope="module")
def instance(horde: FakeHorde, shared_models_dir) -> Iterator[str]:
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(horde_config(horde.url), model) as (base, _runtime):
        yield base


def horde_status(base: str) -> dict[str, Any]:
    return httpx.get(base + "/api/koboldtui/status", timeout=10).json()["horde"]


def test_a_horde_job_runs_on_the_real_model_and_is_submitted(
    horde: FakeHorde, instance: str
) -> None:
    wait_until(lambda: len(horde.pops()) >= 1, what="the first pop")
    body = horde.pops()[0].json
    assert body["models"] == ["koboldcpp/gemma-3-270m-q4_k_m"]
    assert body["max_context_length"] == 256 and body["max_length"] == 128 and body["threads"] == 2
    horde.pop_script.append(
        job_reply(
            "Once upon a time",
            max_length=12,
            max_context_length=256,
            use_default_badwordsids=True,
            temperature=0.5,
            seed=11,
        )
    )
    wait_until(lambda: len(horde.submits()) == 1, what="the submit")
    submit = horde.submits()[0].json
    assert (
        submit["state"] == "ok"
        and isinstance(submit["generation"], str)
        and submit["generation"].strip()
    )
    assert submit["seed"] == 11
    wait_until(lambda: horde_status(instance)["jobs_done"] == 1, what="the status")
    status = horde_status(instance)
    assert status["kudos_session"] == 10.0 and status["tokens_per_s"] > 0
    assert status["username"] == "tester#42" and status["worker_id"]
    assert status["last_error"] is None


def first_token_s(base: str, prompt: str = "The weather today is") -> float:
    started = time.perf_counter()
    with httpx.stream(
        "POST",
        base + "/api/extra/generate/stream",
        timeout=60,
        json={"prompt": prompt, "max_length": 4, "ban_eos_token": True},
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                return time.perf_counter() - started
    raise AssertionError("the stream ended without a token")


def test_a_local_request_gets_its_first_token_at_once_while_horde_jobs_fill_the_other_slots(
    horde: FakeHorde, instance: str
) -> None:
    first_token_s(instance)  # warm-up: the first request pays one-time costs
    idle = statistics.median(first_token_s(instance) for _ in range(3))
    done_before = len(horde.submits())
    time.sleep(0.6)  # let the local-priority window (0.5 s here) run out
    for _ in range(2):
        horde.pop_script.append(
            job_reply(
                "Count from one to a thousand: one, two,",
                max_length=128,
                max_context_length=256,
                use_default_badwordsids=True,
            )
        )

    def horde_slots_busy() -> int:
        queue = httpx.get(instance + "/api/koboldtui/status", timeout=10).json()["queue"]
        return sum(
            1 for q in queue if q["origin"] == "horde" and q["state"] in ("prompt", "generating")
        )

    wait_until(lambda: horde_slots_busy() == 2, what="two Horde jobs generating")
    busy = statistics.median(first_token_s(instance) for _ in range(3))
    still_running = horde_slots_busy() == 2
    print(
        f"\nfirst token: idle {idle * 1000:.0f} ms, with 2 Horde jobs in the other slots "
        f"{busy * 1000:.0f} ms ({busy / idle:.2f}x idle; Horde jobs still running: {still_running})"
    )
    # loose: a shared 2-core VM stalls; the printed ratio is the measure
    assert busy < 4 * idle + 1.0

    # A forced stop hands the jobs in hand back as faulted at once, on the real engine too.
    stopped = httpx.post(instance + "/api/koboldtui/horde/stop", json={"force": True}, timeout=10)
    assert stopped.status_code == 200 and stopped.json()["forced"] is True
    wait_until(lambda: len(horde.submits()) - done_before == 2, what="the faulted submits")
    states = [s.json["state"] for s in horde.submits()[done_before:]]
    assert states == ["faulted", "faulted"] if still_running else set(states) <= {"ok", "faulted"}
    wait_until(lambda: horde_status(instance)["state"] == "stopped", what="the worker to stop")
    assert horde_status(instance)["jobs_faulted"] == (
        2 if still_running else states.count("faulted")
    )
    started = httpx.post(instance + "/api/koboldtui/horde/start", timeout=10)
    assert started.status_code == 200 and started.json()["horde"]["state"] != "stopped"


def test_wrong_key_is_a_clear_error_and_local_generation_still_works(
    horde: FakeHorde, shared_models_dir
) -> None:
    model = next(shared_models_dir.glob("*.gguf"))
    with running_instance(horde_config(horde.url, key="not-my-key"), model) as (base, _runtime):
        wait_until(lambda: horde_status(base)["state"] == "error", what="the worker to stop")
        status = horde_status(base)
        assert status["last_error"].startswith(
            "the Horde rejected the API key (InvalidAPIKey): check --horde-key"
        )
        assert "not-my-key" not in str(status)
        response = httpx.post(
            base + "/api/v1/generate",
            timeout=60,
            json={"prompt": "Hello", "max_length": 4, "ban_eos_token": True},
        )
        assert response.status_code == 200 and response.json()["results"][0]["text"]


def test_koboldtui_serve_runs_the_worker_with_the_key_from_the_environment(
    horde: FakeHorde, bundled_model, tmp_path
) -> None:
    """A real child process: `koboldtui serve --horde` pops with the env key and never logs it."""
    import os
    import signal
    import subprocess
    import sys

    from tests.instance_harness import free_port

    port = free_port()
    env = dict(os.environ, KOBOLDTUI_HORDE_KEY="good-key")
    log_file = tmp_path / "serve.log"
    argv = [
        sys.executable,
        "-m",
        "koboldtui.cli",
        "serve",
        "--model",
        str(bundled_model),
        "--port",
        str(port),
        "--ctx",
        "256",
        "--parallel",
        "2",
        "--batch-size",
        "64",
        "--horde",
        "--horde-name",
        "child-worker",
        "--horde-url",
        horde.url,
        "--horde-window",
        "0",
    ]
    with log_file.open("wb") as log:
        child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: any(p.json["name"] == "child-worker" for p in horde.pops()),
            what="the child's first pop",
        )
        pop = next(p for p in horde.pops() if p.json["name"] == "child-worker")
        assert pop.headers["apikey"] == "good-key" and pop.json["threads"] == 1
        assert "good-key" not in " ".join(argv)
        status = httpx.get(f"http://127.0.0.1:{port}/api/koboldtui/status", timeout=10).json()
        assert status["horde"]["state"] in ("idle", "popping", "starting")
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    assert "good-key" not in log_file.read_text(errors="replace")

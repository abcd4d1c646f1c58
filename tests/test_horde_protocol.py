"""The worker's Horde protocol against the fake Horde: pop/submit bodies, every rc row, backoff.

These use ScriptedEngine (tests/fake_horde.py) on purpose: they check what the worker
says to the Horde and when, which does not depend on the text a model generates.
Generation through the worker on the real engine is in test_horde_engine.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Iterator

import pytest
from fake_horde import (
    ANON_KEY,
    FakeHorde,
    FakeTime,
    Reply,
    ScriptedEngine,
    error_reply,
    job_reply,
)

from koboldtui.engine.types import FinishReason, Origin, QueueFullError
from koboldtui.horde.client import HordeClient
from koboldtui.horde.errors import Action, HordeError

NAME = "koboldtui-test-worker"


@pytest.fixture(scope="module")
def horde_server() -> Iterator[FakeHorde]:
    with FakeHorde(keys={"good-key": "tester#42", "other-key": "someone#7"}) as fake:
        yield fake


async def test_pop_body_and_headers_advertise_honest_limits(horde: FakeHorde, make_worker) -> None:
    worker = make_worker(threads=8, max_length=512)
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 1)
    pop = horde.pops()[0]
    assert pop.headers["apikey"] == "good-key"
    assert pop.headers["client-agent"].startswith("koboldtui:")
    body = pop.json
    assert body["name"] == NAME
    assert body["models"] == ["koboldcpp/scripted-model.Q4_K_M"]
    assert body["max_context_length"] == 512  # the slot's context, never more
    assert body["max_length"] == 128  # clamped: no speed measured yet (later: half the slot)
    assert body["threads"] == 3  # parallel 4 - 1: one slot stays free for local users
    assert body["amount"] == 1 and body["softprompts"] == [] and body["nsfw"] is False
    assert body["bridge_agent"].startswith("koboldtui:") and body["bridge_agent"].count(":") >= 2
    find_user = horde.requests("/v2/find_user")[0]
    assert find_user.headers["apikey"] == "good-key"
    await horde.wait_for(lambda: worker.status()["username"] == "tester#42")
    assert worker.status()["kudos_total"] == 1000.0


async def test_configured_model_name_and_bridge_agent_are_used(
    horde: FakeHorde, make_worker
) -> None:
    worker = make_worker(
        model_name="google/gemma-3-270m", bridge_agent="custom:1:https://x", nsfw=True
    )
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 1)
    body = horde.pops()[0].json
    assert (
        body["models"] == ["google/gemma-3-270m"] and body["bridge_agent"] == "custom:1:https://x"
    )
    assert body["nsfw"] is True


async def test_job_runs_at_horde_priority_and_submit_body(horde: FakeHorde, make_worker) -> None:
    engine = ScriptedEngine(text="and they lived happily.")
    horde.pop_script.append(
        job_reply("Once upon a time", max_length=900, max_context_length=400, top_k=12)
    )
    worker = make_worker(engine)
    await worker.start()
    await horde.wait_for(lambda: len(horde.submits()) == 1)
    request = engine.requests[0]
    assert request.origin is Origin.HORDE and request.truncate_prompt is True
    assert request.prompt == "Once upon a time" and request.sampling.top_k == 12
    assert request.max_context == 400 and request.max_tokens == 128  # what we advertised
    submit = horde.submits()[0]
    assert submit.headers["apikey"] == "good-key"
    (job_id,) = horde.submitted
    assert submit.json == {
        "id": job_id,
        "generation": "and they lived happily.",
        "state": "ok",
        "seed": 1234,
    }
    await horde.wait_for(lambda: worker.status()["jobs_done"] == 1)
    status = worker.status()
    assert status["kudos_session"] == 10.0 and status["tokens_per_s"] > 0
    assert status["worker_id"] == horde.workers[NAME]["id"]


async def test_one_submit_per_id(horde: FakeHorde, make_worker) -> None:
    horde.pop_script.append(job_reply("p", n=3, seed=5))
    engine = ScriptedEngine()
    worker = make_worker(engine, threads=3)
    await worker.start()
    await horde.wait_for(lambda: len(horde.submits()) == 3)
    assert {s.json["id"] for s in horde.submits()} == set(horde.submitted)
    assert sorted(r.sampling.seed for r in engine.requests) == [5, 6, 7]
    await horde.wait_for(lambda: worker.status()["jobs_done"] == 3)


async def test_empty_pops_show_skipped_and_slow_down(horde: FakeHorde, make_worker) -> None:
    horde.skipped = {"max_context_length": 3, "models": 2}
    t = FakeTime()
    worker = make_worker(time=t)
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 13)
    status = worker.status()
    assert status["skipped"] == {"max_context_length": 3, "models": 2}
    assert status["state"] in ("idle", "popping") and status["empty_pops"] >= 12
    assert t.sleeps[:12] == [1.0] * 10 + [2.0] * 2


async def test_kudos_total_is_fetched_at_most_every_minute(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    worker = make_worker(time=t)
    start = t.now
    await worker.start()
    await horde.wait_for(lambda: t.now - start >= 150)
    await worker.stop()
    calls = len(horde.requests("/v2/find_user"))
    assert calls in (3, 4)  # t=0, 60, 120 (and maybe 180 as the clock ran on)
    assert calls <= 1 + (t.now - start) // 60


FATAL_POP_ERRORS = [
    (403, "TooManyWorkers"),
    (403, "TooManySameIPs"),
    (403, "UnsafeIP"),
    (403, "WorkerInviteOnly"),
    (403, "DeletedUser"),
    (403, "WorkerFlaggedMaintenance"),
    (400, "ProfaneWorkerName"),
    (400, "PolymorphicNameConflict"),
    (400, "InvalidPriorityUsername"),
    (400, None),
]


@pytest.mark.parametrize(("status", "rc"), FATAL_POP_ERRORS)
async def test_fatal_pop_errors_stop_the_worker_with_words(
    horde: FakeHorde, make_worker, status: int, rc: str | None
) -> None:
    horde.pop_script.append(error_reply(status, rc, "the server's own words"))
    worker = make_worker()
    await worker.start()
    await horde.wait_for(lambda: worker.status()["state"] == "error")
    last_error = worker.status()["last_error"]
    assert (rc or "HTTP 400") in last_error and "the server's own words" in last_error
    await asyncio.sleep(0.05)
    assert len(horde.pops()) == 1  # it does not keep hammering


async def test_wrong_key_stops_with_a_clear_error_and_never_shows_the_key(
    horde: FakeHorde, make_worker, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = make_worker(key="wrong-secret-key")
    await worker.start()
    await horde.wait_for(lambda: worker.status()["state"] == "error")
    status = worker.status()
    assert status["last_error"].startswith(
        "the Horde rejected the API key (InvalidAPIKey): check --horde-key"
    )
    assert "wrong-secret-key" not in json.dumps(status) and "wrong-secret-key" not in caplog.text
    assert "wrong-secret-key" not in repr(HordeClient("wrong-secret-key"))
    assert horde.pops() == []  # found out by find_user before any pop


async def test_anonymous_key_cannot_run_a_worker(horde: FakeHorde, make_worker) -> None:
    worker = make_worker(key=ANON_KEY)
    await worker.start()
    await horde.wait_for(lambda: worker.status()["state"] == "error")
    assert (
        "AnonForbiddenWorker" in worker.status()["last_error"]
        and "register" in worker.status()["last_error"]
    )


async def test_name_owned_by_someone_else(horde: FakeHorde, make_worker) -> None:
    horde.name_owners[NAME] = "other-key"
    worker = make_worker()
    await worker.start()
    await horde.wait_for(lambda: worker.status()["state"] == "error")
    assert (
        "WrongCredentials" in worker.status()["last_error"]
        and "--horde-name" in worker.status()["last_error"]
    )


async def test_maintenance_keeps_polling_slowly_and_shows_the_message(
    horde: FakeHorde, make_worker
) -> None:
    t = FakeTime()
    horde.pop_script.append(
        error_reply(403, "WorkerMaintenance", "Worker is in maintenance: too many faults")
    )
    worker = make_worker(time=t)
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 2)
    assert 60.0 in t.sleeps  # polled again after the slow maintenance interval
    await horde.wait_for(lambda: worker.status()["state"] in ("idle", "popping"))
    # the next pop succeeded: the message and the error are both over
    assert worker.status()["maintenance_message"] is None
    assert worker.status()["last_error"] is None


@pytest.mark.parametrize(
    ("reply_status", "rc", "counter", "words"),
    [
        (404, "InvalidJobID", "jobs_dropped", "expired"),
        (400, "AbortedGen", "jobs_dropped", "--horde-max-length"),
        (400, "DuplicateGen", "jobs_done", None),
    ],
)
async def test_submit_errors(
    horde: FakeHorde, make_worker, reply_status: int, rc: str, counter: str, words: str | None
) -> None:
    horde.pop_script.append(job_reply())
    horde.submit_script.append(error_reply(reply_status, rc))
    worker = make_worker()
    await worker.start()
    await horde.wait_for(lambda: worker.status()[counter] == 1)
    status = worker.status()
    assert status["jobs_done"] + status["jobs_dropped"] + status["jobs_faulted"] == 1
    if words:
        assert words in status["last_error"]
    assert status["state"] != "error"  # it carries on popping


async def test_submit_retries_server_errors_then_succeeds(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    horde.pop_script.append(job_reply())
    horde.submit_script += [error_reply(503, None), error_reply(500, None)]
    worker = make_worker(time=t, threads=1)  # spare threads' idle pops would sleep on this clock too
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_done"] == 1)
    assert len(horde.submits()) == 3 and t.sleeps[:2] == [1.0, 2.0]


async def test_submit_that_cannot_succeed_before_the_ttl_is_dropped(
    horde: FakeHorde, make_worker
) -> None:
    horde.pop_script.append(job_reply(ttl=5))
    horde.submit_script += [error_reply(503, None)] * 5
    worker = make_worker()
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_dropped"] == 1)
    assert "expired" in worker.status()["last_error"]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_pop_backoff_is_exponential_on_the_injected_clock(
    horde: FakeHorde, make_worker, status: int
) -> None:
    t = FakeTime()
    pop_times: list[float] = []
    horde.on_pop = lambda rec: pop_times.append(t.now)
    horde.pop_script += [error_reply(status, None)] * 4
    worker = make_worker(time=t, rng=lambda: 0.5)
    await worker.start()
    await horde.wait_for(lambda: len(pop_times) >= 6)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(pop_times)]
    assert gaps[:4] == [1.5, 3.0, 6.0, 12.0]  # 2**n with jitter 0.75, then...
    assert gaps[4] == 1.0  # ...success resets it: an empty pop waits 1 s
    assert worker.status()["last_error"] is None  # and clears the error: the Horde answers again


async def test_retry_after_is_honoured(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    horde.pop_script.append(error_reply(429, None, **{"Retry-After": "30"}))
    worker = make_worker(time=t)
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 2)
    assert t.sleeps[0] == 30.0


@pytest.mark.parametrize("rc", ["TooManyNewIPs", "TimeoutIP"])
async def test_ip_throttling_backs_off_at_least_a_minute(
    horde: FakeHorde, make_worker, rc: str
) -> None:
    t = FakeTime()
    horde.pop_script.append(error_reply(403, rc))
    worker = make_worker(time=t)
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 2)
    assert t.sleeps[0] >= 60.0 and worker.status()["state"] != "error"


async def test_unreachable_horde_backs_off_and_says_so(make_worker) -> None:
    t = FakeTime()
    worker = make_worker(time=t, url="http://127.0.0.1:9/api")  # discard port: nothing listens
    await worker.start()
    deadline = asyncio.get_running_loop().time() + 10
    while len(t.sleeps) < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    status = worker.status()
    assert status["state"] in ("backoff", "popping", "starting")
    assert "could not reach the Horde" in status["last_error"]
    assert t.sleeps[:2] == [1.0, 2.0]


async def test_engine_failures_are_submitted_faulted(horde: FakeHorde, make_worker) -> None:
    engine = ScriptedEngine(hold=True)
    horde.pop_script += [job_reply("a"), job_reply("b"), job_reply("c")]
    worker = make_worker(engine, threads=2)
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 2)
    first, second = list(engine.running)
    first.release(FinishReason.ERROR, error="decode failed")
    engine.fail_with = QueueFullError(64)
    second.release()
    await horde.wait_for(lambda: len(horde.submits()) >= 3)
    states = sorted(s.json["state"] for s in horde.submits())
    assert states == ["faulted", "faulted", "ok"]  # the engine error, the full queue, the good one
    assert all(isinstance(s.json["generation"], str) for s in horde.submits())
    await horde.wait_for(lambda: worker.status()["jobs_faulted"] == 2)


async def test_unservable_payload_is_faulted_promptly(horde: FakeHorde, make_worker) -> None:
    horde.pop_script.append(job_reply(prompt=None))
    engine = ScriptedEngine()
    worker = make_worker(engine)
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_faulted"] == 1)
    assert engine.requests == [] and horde.submits()[0].json["state"] == "faulted"
    assert "could not be served" in worker.status()["last_error"]


async def test_parallel_one_without_preempt_refuses_to_start(make_worker) -> None:
    worker = make_worker(parallel=1)
    await worker.start()
    status = worker.status()
    assert status["state"] == "error" and "--parallel" in status["last_error"]


async def test_a_pop_that_times_out_is_retried_with_backoff(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    horde.pop_script.append(Reply(200, {"id": None, "ids": []}, delay_s=1.0))
    worker = make_worker(time=t, client=HordeClient("good-key", horde.url, timeout_s=0.2))
    errors: list[str | None] = []  # as seen while backing off (the next good pop clears it)
    t.on_sleep = lambda now: errors.append(worker.status()["last_error"])
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 2)
    assert "timed out" in (errors[0] or "") and t.sleeps[0] == 1.0


async def test_client_calls_and_headers(horde: FakeHorde) -> None:
    client = HordeClient("good-key", horde.url + "/")
    try:
        assert (await client.heartbeat())["message"] == "OK"
        assert "apikey" not in horde.requests("/v2/status/heartbeat")[0].headers  # needs no key
        await client.pop({"name": "w1", "models": ["m"]})
        by_name = await client.worker_by_name("w1")
        assert (await client.worker_by_id(by_name["id"]))["name"] == "w1"
        await client.set_maintenance(by_name["id"], True, "brb")
        with pytest.raises(HordeError) as info:
            await client.pop({"name": "w1", "models": ["m"]})
        assert info.value.status == 403 and info.value.rc == "WorkerMaintenance"
        assert info.value.action is Action.MAINTENANCE
        with pytest.raises(HordeError) as info:
            await client.worker_by_name("nobody")
        assert info.value.status == 404
        assert all(r.headers["client-agent"].startswith("koboldtui:") for r in horde.records)
    finally:
        await client.aclose()

"""The worker under faults: a key that cannot be sent, jobs that overrun their ttl, bugs of ours.

Like test_horde_protocol.py these use ScriptedEngine and the fake Horde with an injected
clock: what matters is what the worker tells the Horde, the status and the log, and when.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from fake_horde import FakeHorde, FakeTime, ScriptedEngine, job_reply

from koboldtui.horde import payload as horde_payload
from koboldtui.horde.client import HordeClient
from koboldtui.horde.errors import Action, HordeError

SECRET = "s3cr3t-horde-key"


def _leaks(text: str) -> bool:
    return SECRET in text or "horde-key\xa0" in text or "\\xa0tail" in text


# ------------------------------------------------------------------------ the API key


async def test_non_ascii_key_stops_with_words_and_never_shows_the_key(
    horde: FakeHorde, make_worker, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = make_worker(key=SECRET + "\xa0tail")  # a non-breaking space inside the key
    await worker.start()
    await horde.wait_for(lambda: worker.status()["state"] == "error")
    status = worker.status()
    assert status["last_error"].startswith(
        "the Horde API key contains characters that are not plain ASCII "
        "(a stray space or quote from copy-paste?): re-enter it"
    )
    dumped = json.dumps(status, ensure_ascii=False)
    assert not _leaks(dumped) and not _leaks(json.dumps(status)) and not _leaks(caplog.text)
    assert horde.records == []  # found out before anything was sent


async def test_key_whitespace_from_copy_paste_is_stripped(horde: FakeHorde, make_worker) -> None:
    worker = make_worker(key=" good-key\xa0\n")
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 1)
    assert horde.pops()[0].headers["apikey"] == "good-key"
    await horde.wait_for(lambda: worker.status()["username"] == "tester#42")
    assert worker.status()["state"] != "error"


async def test_client_errors_never_carry_exception_text() -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"something odd with {SECRET}")

    client = HordeClient(SECRET, "http://127.0.0.1:9/api", transport=httpx.MockTransport(explode))
    try:
        with pytest.raises(HordeError) as info:
            await client.pop({"name": "w", "models": ["m"]})
        assert "RuntimeError" in str(info.value) and SECRET not in str(info.value)
        assert info.value.__cause__ is None and info.value.__suppress_context__
    finally:
        await client.aclose()
    for bad in (SECRET + "\u201d", SECRET + "\tx", "\u201c" + SECRET):
        client = HordeClient(bad, "http://127.0.0.1:9/api", transport=httpx.MockTransport(explode))
        with pytest.raises(HordeError) as info:
            await client.find_user()
        assert info.value.action is Action.STOP and "re-enter it" in str(info.value)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)


async def test_a_bug_in_the_loop_reports_only_the_exception_type(
    horde: FakeHorde, make_worker, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    worker = make_worker()

    async def broken() -> None:
        raise UnicodeEncodeError("ascii", SECRET + "\xa0", len(SECRET), len(SECRET) + 1, "no")

    worker._refresh_user = broken  # type: ignore[method-assign]
    await worker.start()
    await horde.wait_for(lambda: worker.status()["state"] == "error")
    status = worker.status()
    assert (
        "UnicodeEncodeError" in status["last_error"] and "report this bug" in status["last_error"]
    )
    assert not _leaks(json.dumps(status, ensure_ascii=False)) and not _leaks(caplog.text)
    assert "_run" in caplog.text  # where it happened still reaches the log


# ------------------------------------------------------------------------ job deadlines


async def test_a_job_that_never_ends_is_aborted_and_faulted_before_its_ttl(
    horde: FakeHorde, make_worker, monkeypatch
) -> None:
    monkeypatch.setattr(horde_payload, "DEADLINE_POLL_S", 0.01)
    t = FakeTime()
    engine = ScriptedEngine(hold=True)
    horde.pop_script.append(job_reply(ttl=150))
    # one thread: with spare threads the idle pops' injected sleeps would move this clock too
    worker = make_worker(engine, time=t, threads=1)
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 1)
    (handle,) = engine.running
    popped_at = t.now
    t.now = popped_at + 100  # still in time: it keeps running
    await asyncio.sleep(0.1)  # ten looks at the clock
    assert not handle.aborted and horde.submits() == []
    t.now = popped_at + 141  # past the ttl less the 10 s kept for the submit
    await horde.wait_for(lambda: len(horde.submits()) == 1)
    assert t.now < popped_at + 150  # submitted before the job went stale
    assert handle.aborted
    submit = horde.submits()[0].json
    assert submit["state"] == "faulted" and submit["generation"] == ""
    await horde.wait_for(lambda: worker.status()["jobs_faulted"] == 1)
    status = worker.status()
    assert status["jobs_dropped"] == 0 and "could not finish within" in status["last_error"]


async def test_unmeasured_worker_advertises_a_conservative_length(
    horde: FakeHorde, make_worker
) -> None:
    worker = make_worker(max_length=512)
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 1)
    assert horde.pops()[0].json["max_length"] == 128  # not min(512, ctx // 2) = 256
    worker.stats.record_speed(100, 50.0)  # measured fast: the full length is honest now
    assert worker.limits().max_length == 256


# ------------------------------------------------------------------------ bugs fault jobs


async def test_an_unexpected_error_in_a_job_submits_it_faulted(
    horde: FakeHorde, make_worker, caplog
) -> None:
    engine = ScriptedEngine()
    engine.fail_with = RuntimeError("not an EngineError")
    horde.pop_script.append(job_reply())
    worker = make_worker(engine)
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_faulted"] == 1)
    submit = horde.submits()[0].json
    assert submit["state"] == "faulted" and isinstance(submit["generation"], str)
    status = worker.status()
    assert status["jobs_dropped"] == 0 and "RuntimeError" in status["last_error"]
    assert status["state"] != "error"  # it carries on popping


async def test_an_overflowing_max_length_gets_the_default(horde: FakeHorde, make_worker) -> None:
    engine = ScriptedEngine()
    horde.pop_script.append(job_reply(max_length=float("inf")))  # sent as JSON 1e999 would be
    worker = make_worker(engine)
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_done"] == 1)
    assert horde.submits()[0].json["state"] == "ok"
    assert engine.requests[0].max_tokens == 80  # the KoboldAI default, within our limits
    assert worker.status()["jobs_dropped"] == 0

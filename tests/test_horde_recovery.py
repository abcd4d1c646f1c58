"""Horde results kept until their ttl really runs out, and a status that tells the truth after recovery.

Protocol-level (ScriptedEngine + the fake Horde on 127.0.0.1, injected clock): what the
worker tells the Horde and its own status, not the generated text.
"""

from __future__ import annotations

import logging

from fake_horde import FakeHorde, FakeTime, ScriptedEngine, error_reply, job_reply

from koboldtui.commands.horde import describe, stop_summary


async def test_a_failing_submit_is_retried_until_the_ttl_runs_out_and_the_drop_is_visible(
    horde: FakeHorde, make_worker, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="koboldtui.horde")
    t = FakeTime()
    job = job_reply(ttl=60)
    horde.pop_script.append(job)
    horde.submit_script += [error_reply(503, None)] * 50
    seen: list[dict] = []
    workers: list = []
    fake_sleep = t.sleep

    async def sleep_and_look(seconds: float) -> None:
        if seconds >= 4 and not seen:
            seen.append(workers[0].status())  # waiting between two failed tries
        await fake_sleep(seconds)

    t.sleep = sleep_and_look
    # backoff 1, 2, 4, 8, 16, 32 s; one thread: spare threads' idle pops would sleep on this clock too
    worker = make_worker(time=t, rng=lambda: 0.0, threads=1)
    workers.append(worker)
    tries: list[float] = []
    submit = worker._client.submit

    async def timed_submit(body):
        tries.append(t.now)
        return await submit(body)

    worker._client.submit = timed_submit
    await worker.start()
    started = t.now
    await horde.wait_for(lambda: worker.status()["jobs_dropped"] == 1)
    # old fault: given up at +31 s because 31 + 32 > 60, i.e. 29 s before its deadline
    assert tries[-1] - started >= 60 - 0.01, [round(x - started, 1) for x in tries]
    assert [round(x - started) for x in tries] == [0, 1, 3, 7, 15, 31, 60]
    during = seen[0]
    assert during["state"] == "backoff" and during["backoff_s"] > 0
    assert "retrying" in during["last_error"] and during["last_error_age_s"] is not None
    status = worker.status()
    assert status["last_drop"]["id"] == job["ids"][0]
    assert "expired" in status["last_drop"]["reason"] and "7 tries" in status["last_drop"]["reason"]
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    drops = [r for r in caplog.records if "dropped" in r.getMessage() and r.levelno == logging.ERROR]
    assert len(retries) == 6 and len(drops) == 1


async def test_a_pop_error_clears_once_the_horde_answers_again(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    horde.pop_script += [error_reply(503, None)] * 2
    worker = make_worker(time=t)
    seen: list[dict] = []
    t.on_sleep = lambda now: seen.append(worker.status()) if not seen else None
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 4)
    assert "503" in seen[0]["last_error"] and seen[0]["last_error_at"] > 0  # shown with its time
    await horde.wait_for(lambda: worker.status()["last_error"] is None)
    status = worker.status()
    assert status["last_error_at"] is None and status["last_error_age_s"] is None


async def test_maintenance_off_leaves_maintenance_at_once(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    worker = make_worker(time=t)
    await worker.start()
    await horde.wait_for(lambda: worker.worker_id is not None)
    await worker.set_maintenance(True, "upgrading")
    await horde.wait_for(lambda: "WorkerMaintenance" in (worker.status()["last_error"] or "")
                         or "maintenance" in (worker.status()["last_error"] or ""))
    await worker.set_maintenance(False)
    status = worker.status()
    assert status["state"] != "maintenance", status  # the fault: it said "maintenance"
    assert status["maintenance_message"] is None and status["last_error"] is None


async def test_stop_eta_is_unknown_not_zero_while_a_job_runs_past_its_estimate(
    horde: FakeHorde, make_worker
) -> None:
    t = FakeTime()
    engine = ScriptedEngine(hold=True)
    horde.pop_script.append(job_reply(max_length=16))
    worker = make_worker(engine, time=t)
    worker.stats.record_speed(16, 8.0)  # 8 tok/s measured: 16 tokens take about 2 s
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_in_progress"] == 1)
    summary = await worker.stop(wait=False)
    assert summary["eta_s"] is not None and summary["eta_s"] > 0
    t.now += 10.0  # well past the estimate; the job still runs
    status = worker.status()
    assert status["state"] == "stopping" and status["stop_eta_s"] is None
    assert "unknown" in "\n".join(describe(status))
    engine.release_all()
    await worker.wait_stopped()


def test_stop_force_says_it_faults_the_jobs_in_hand() -> None:
    forced = stop_summary({"jobs_in_progress": 1, "eta_s": 0.0, "forced": True})
    assert forced.startswith("faulting 1 job(s)") and "finishing" not in forced
    graceful = stop_summary({"jobs_in_progress": 2, "eta_s": 12.0, "forced": False})
    assert graceful.startswith("finishing 2 job(s)") and "about 12 s" in graceful


async def test_jobs_a_killed_process_held_are_handed_back_faulted_by_the_next(
    horde: FakeHorde, make_worker, tmp_path
) -> None:
    import json
    import time

    from koboldtui.horde.journal import JobJournal

    journal_path = tmp_path / "w.horde-jobs.json"
    horde.jobs["held-by-the-dead"] = {"prompt": "x"}  # handed out to the process that was killed
    journal_path.write_text(json.dumps({"held-by-the-dead": time.time() + 100,
                                        "long-expired": time.time() - 5}))
    worker = make_worker(time=FakeTime(), journal=JobJournal(journal_path))
    await worker.start()
    await horde.wait_for(lambda: "held-by-the-dead" in horde.submitted)
    assert horde.submitted["held-by-the-dead"]["state"] == "faulted"
    assert [s.json["id"] for s in horde.submits()] == ["held-by-the-dead"]  # not the expired one
    await horde.wait_for(lambda: json.loads(journal_path.read_text()) == {})


async def test_the_journal_holds_exactly_the_jobs_in_hand(horde: FakeHorde, make_worker, tmp_path) -> None:
    import json

    from koboldtui.horde.journal import JobJournal

    journal_path = tmp_path / "w.horde-jobs.json"
    engine = ScriptedEngine(hold=True)
    job = job_reply()
    horde.pop_script.append(job)
    worker = make_worker(engine, time=FakeTime(), journal=JobJournal(journal_path))
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_in_progress"] == 1)
    assert list(json.loads(journal_path.read_text())) == job["ids"]
    engine.release_all()
    await horde.wait_for(lambda: worker.status()["jobs_done"] == 1)
    assert json.loads(journal_path.read_text()) == {}

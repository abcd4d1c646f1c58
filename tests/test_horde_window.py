"""Local priority and stop: no pop inside the window, resume after it, jobs in hand finish.

ScriptedEngine (tests/fake_horde.py) stands in for the engine because these tests are
about *when* the worker pops and submits relative to local requests and stop commands;
the injected clock makes the 20-second window take no real time.
"""

from __future__ import annotations

from typing import Any

from fake_horde import FakeHorde, FakeTime, ScriptedEngine, job_reply


def record_pop_times(horde: FakeHorde, t: FakeTime) -> list[float]:
    times: list[float] = []
    horde.on_pop = lambda rec: times.append(t.now)
    return times


async def test_no_pop_inside_the_window_and_resume_after_it(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    worker = make_worker(time=t)
    seen: list[dict[str, Any]] = []
    t.on_sleep = lambda now: seen.append(worker.status())
    pop_times = record_pop_times(horde, t)
    worker.gate.stamp()  # a local request just finished
    stamped_at = t.now
    await worker.start()
    await horde.wait_for(lambda: len(pop_times) >= 2)
    assert pop_times[0] >= stamped_at + 20.0
    paused = [s for s in seen if s["state"] == "paused_local"]
    assert paused and all(0 < s["remaining_s"] <= 20.0 for s in paused)
    assert max(s["remaining_s"] for s in paused) >= 19.0  # the countdown starts at the window
    assert worker.status()["remaining_s"] == 0.0


async def test_a_second_local_request_restarts_the_window(horde: FakeHorde, make_worker) -> None:
    t = FakeTime()
    worker = make_worker(time=t)
    pop_times = record_pop_times(horde, t)
    worker.gate.stamp()
    first = t.now
    restamped: list[float] = []

    def second_local_request(now: float) -> None:
        if now >= first + 10 and not restamped:
            worker.gate.stamp()
            restamped.append(now)

    t.on_sleep = second_local_request
    await worker.start()
    await horde.wait_for(lambda: len(pop_times) >= 1)
    assert restamped and pop_times[0] >= restamped[0] + 20.0 > first + 20.0


async def test_the_job_in_hand_finishes_while_a_local_request_runs(
    horde: FakeHorde, make_worker
) -> None:
    t = FakeTime()
    engine = ScriptedEngine(hold=True)
    horde.pop_script.append(job_reply())
    worker = make_worker(engine, time=t, threads=1)  # 1: no second pop can be in flight already
    pop_times = record_pop_times(horde, t)
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 1)
    worker.gate.local_started()  # a person starts generating
    pops_before = len(horde.pops())
    status = worker.status()
    # pops are paused while the job in hand runs on (README: state paused_local)
    assert status["state"] == "paused_local" and status["remaining_s"] == 20.0
    assert status["jobs_in_progress"] == 1
    engine.release_all()
    await horde.wait_for(lambda: len(horde.submits()) == 1)
    assert horde.submits()[0].json["state"] == "ok"  # the job in hand was not dropped
    await horde.wait_for(lambda: t.now > pop_times[-1] + 100)  # a long local generation
    assert len(horde.pops()) == pops_before and worker.status()["state"] == "paused_local"
    worker.gate.local_finished()
    finished_at = t.now
    await horde.wait_for(lambda: len(horde.pops()) > pops_before)
    assert pop_times[pops_before] >= finished_at + 20.0


async def test_graceful_stop_finishes_jobs_in_hand_with_count_and_eta(
    horde: FakeHorde, make_worker
) -> None:
    engine = ScriptedEngine(hold=True, text="one two three four five six seven eight")
    horde.pop_script += [job_reply("first"), job_reply("second"), job_reply("third")]
    worker = make_worker(engine, threads=2)
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 2)
    next(iter(engine.running)).release()  # one finishes: the speed is measured
    await horde.wait_for(lambda: len(engine.running) == 2 and worker.status()["jobs_done"] == 1)
    summary = await worker.stop(wait=False)
    assert summary["jobs_in_progress"] == 2 and summary["forced"] is False
    assert summary["eta_s"] is not None and summary["eta_s"] > 0
    status = worker.status()
    assert (
        status["state"] == "stopping"
        and status["jobs_in_progress"] == 2
        and status["stop_eta_s"] > 0
    )
    pops = len(horde.pops())
    engine.release_all()
    await worker.wait_stopped()
    assert [s.json["state"] for s in horde.submits()] == ["ok", "ok", "ok"]
    status = worker.status()
    assert (
        status["state"] == "stopped"
        and status["jobs_done"] == 3
        and status["jobs_in_progress"] == 0
    )
    assert len(horde.pops()) == pops  # nothing new was popped while stopping


async def test_forced_stop_submits_jobs_in_hand_faulted(horde: FakeHorde, make_worker) -> None:
    engine = ScriptedEngine(hold=True)
    horde.pop_script += [job_reply("a"), job_reply("b")]
    worker = make_worker(engine, threads=2)
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 2)
    summary = await worker.stop(force=True)
    assert summary == {"jobs_in_progress": 2, "eta_s": 0.0, "forced": True}
    assert [(s.json["state"], s.json["generation"]) for s in horde.submits()] == [
        ("faulted", ""),
        ("faulted", ""),
    ]
    assert worker.status()["state"] == "stopped" and worker.status()["jobs_faulted"] == 2


async def test_a_stopped_worker_starts_again(horde: FakeHorde, make_worker) -> None:
    worker = make_worker()
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) >= 1)
    await worker.stop()
    assert worker.status()["state"] == "stopped"
    pops = len(horde.pops())
    await worker.start()
    await horde.wait_for(lambda: len(horde.pops()) > pops)
    assert worker.status()["state"] in ("idle", "popping")

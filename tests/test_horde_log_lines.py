"""What the Horde worker writes to its log and status: each event once, in plain words.

Protocol-level (ScriptedEngine + the fake Horde on 127.0.0.1, injected clock).
"""

from __future__ import annotations

import logging

from fake_horde import FakeHorde, FakeTime, ScriptedEngine, error_reply, job_reply

from koboldtui.horde.stats import HordeStats


async def test_the_stop_line_is_logged_once_per_stop(horde: FakeHorde, make_worker, caplog) -> None:
    caplog.set_level(logging.INFO, logger="koboldtui.horde")
    engine = ScriptedEngine(hold=True)
    horde.pop_script += [job_reply("a"), job_reply("b")]
    worker = make_worker(engine, threads=2)
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 2)
    await worker.stop(wait=False)  # the instance's first signal
    await worker.stop(wait=False)  # the supervisor asks again
    lines = [r.getMessage() for r in caplog.records if "stopping:" in r.getMessage()]
    assert lines == ["Horde worker stopping: 2 job(s) in hand"]
    await worker.stop(force=True)  # turning it forced is news: one more line
    lines = [r.getMessage() for r in caplog.records if "stopping:" in r.getMessage()]
    assert lines[1:] == ["Horde worker stopping: 2 job(s) in hand (faulting them)"]


async def test_a_drop_says_it_gave_up_once_and_the_countdown_moves(
    horde: FakeHorde, make_worker, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="koboldtui.horde")
    t = FakeTime()
    horde.pop_script.append(job_reply(ttl=60))
    horde.submit_script += [error_reply(503, None)] * 50
    workers: list = []
    pairs: list[tuple[str, str]] = []
    fake_sleep = t.sleep

    async def sleep_and_look(seconds: float) -> None:
        if seconds >= 4 and not pairs:  # a wait between two failed tries: look in its middle
            before = workers[0].status()["last_error"] or ""
            t.now += 3
            pairs.append((before, workers[0].status()["last_error"] or ""))
            t.now -= 3
        await fake_sleep(seconds)

    t.sleep = sleep_and_look  # type: ignore[method-assign]
    worker = make_worker(time=t)
    workers.append(worker)
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_dropped"] == 1)
    (before, after), = pairs
    left = [int(text.rsplit("retrying for ", 1)[1].split(" s")[0]) for text in (before, after)]
    assert left[0] - left[1] == 3, pairs  # the countdown moves between tries
    drop = worker.status()["last_drop"]
    reason = drop["reason"]
    assert "retrying" not in reason and drop["id"] not in reason and reason.count("(") <= 1, reason
    assert "given up after" in reason and "expired" in reason and "HTTP 503" in reason
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].count(drop["id"]) == 1, dropped


async def test_maintenance_switched_at_the_horde_is_logged_on_and_off(
    horde: FakeHorde, make_worker, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="koboldtui.horde")
    t = FakeTime()
    worker = make_worker(time=t)
    await worker.start()
    await horde.wait_for(lambda: worker.worker_id is not None)
    horde.workers[worker.settings.worker_name].update(maintenance_mode=True, maintenance_msg="too slow")
    await horde.wait_for(lambda: worker.status()["state"] == "maintenance")
    await horde.wait_for(lambda: len(horde.pops()) >= 6)  # several pops refused: one line
    horde.workers[worker.settings.worker_name].update(maintenance_mode=False)
    await horde.wait_for(lambda: worker.status()["state"] != "maintenance")
    messages = [r.getMessage() for r in caplog.records]
    on = [m for m in messages if "in maintenance:" in m]
    assert len(on) == 1 and "too slow" in on[0], messages
    assert sum("out of maintenance" in m for m in messages) == 1, messages


def test_max_length_is_sized_by_the_speed_with_every_thread_busy() -> None:
    stats = HordeStats()
    stats.record_speed(100, 30.0, full_load=30.0 * 1 / 3)  # ran alone; 3 threads may run
    assert stats.tokens_per_s == 30.0 and stats.full_load_tokens_per_s == 10.0
    plain = HordeStats()
    plain.record_speed(100, 30.0)
    assert plain.full_load_tokens_per_s == 30.0


async def test_default_threads_take_every_spare_slot_and_advertise_them(horde: FakeHorde, make_worker) -> None:
    engine = ScriptedEngine(hold=True)
    horde.pop_script += [job_reply("a"), job_reply("b"), job_reply("c"), job_reply("d")]
    worker = make_worker(engine, parallel=4)  # threads left at the default
    await worker.start()
    await horde.wait_for(lambda: len(engine.running) == 3)
    assert worker.status()["threads"] == 3 and horde.pops()[0].json["threads"] == 3
    engine.release_all()
    await horde.wait_for(lambda: len(horde.submits()) == 4)

"""The Horde view's recent jobs: what the worker knows of each job, and nothing it cannot know."""

from __future__ import annotations

from fake_horde import FakeHorde, ScriptedEngine, job_reply


async def test_recent_jobs_say_model_and_time_in_our_hands_never_a_requester_wait(
    horde: FakeHorde, make_worker
) -> None:
    """The pop says nothing of how long the requester waited; the worker lists what it knows."""
    horde.pop_script.append(job_reply("Once upon a time", ttl=90))
    worker = make_worker(ScriptedEngine(text="and they lived happily."))
    await worker.start()
    await horde.wait_for(lambda: worker.status()["jobs_done"] == 1)
    (job,) = worker.status()["recent_jobs"]
    assert job["model"] == "koboldcpp/test" and job["state"] == "ok" and job["kudos"] == 10.0
    assert job["ttl_s"] == 90.0  # the job's own ttl from the pop
    assert job["held_s"] is not None and 0.0 <= job["held_s"] <= 90.0
    assert not any("wait" in key for key in job)

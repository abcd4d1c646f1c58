"""Horde payload ⇄ our types: honest limits, samplers, output formatting, error classes."""

from __future__ import annotations

import pytest

from koboldtui.engine.types import Origin, SamplingParams
from koboldtui.horde.backoff import Backoff, EmptyPopPacer
from koboldtui.horde.errors import Action, HordeError, classify
from koboldtui.horde.payload import (
    HordeJob,
    UnservablePayload,
    WorkerLimits,
    default_model_name,
    format_generation,
    honest_limits,
    job_request,
    pop_body,
)
from koboldtui.horde.worker import horde_threads


def test_limits_never_exceed_the_slot_and_leave_room_for_the_prompt() -> None:
    assert honest_limits(1024, 512, 10.0) == WorkerLimits(max_context_length=1024, max_length=512)
    assert honest_limits(512, 512, 10.0) == WorkerLimits(max_context_length=512, max_length=256)
    # once jobs are measured slow, max_length shrinks to what finishes in half the ttl
    assert honest_limits(8192, 512, tokens_per_s=2.0).max_length == 150
    assert honest_limits(8192, 512, tokens_per_s=0.01).max_length == 16  # a floor, never 0


def test_limits_are_conservative_until_a_speed_is_measured() -> None:
    # min(512, ctx // 2) would promise 512 tokens a slow instance may not make in the ttl
    assert honest_limits(8192, 512) == WorkerLimits(max_context_length=8192, max_length=128)
    assert honest_limits(8192, 64).max_length == 64  # a smaller configured length stands
    assert honest_limits(200, 512).max_length == 100  # and so does half a small slot
    assert honest_limits(8192, 512, tokens_per_s=20.0).max_length == 512  # measured fast


def test_job_context_is_at_least_16_and_the_length_fits() -> None:
    limits = WorkerLimits(max_context_length=1024, max_length=200)
    for asked in (0, 1, 3, -50):
        req = job_request({"prompt": "x", "max_context_length": asked}, limits)
        assert req.max_context == 16 and 1 <= req.max_tokens <= 15
    req = job_request({"prompt": "x", "max_length": -3, "max_context_length": 64}, limits)
    assert req.max_context == 64 and req.max_tokens == 1
    req = job_request({"prompt": "x", "max_length": 500, "max_context_length": 64}, limits)
    assert req.max_tokens == 63  # one prompt token still fits
    tiny = job_request({"prompt": "x", "max_context_length": 100}, WorkerLimits(8, 4))
    assert tiny.max_context == 8 and tiny.max_tokens == 4  # never above the slot


def test_huge_or_non_finite_numbers_are_treated_as_missing() -> None:
    limits = WorkerLimits(max_context_length=1024, max_length=200)
    payload = {
        "prompt": "x",
        "max_length": float("inf"),  # what JSON's 1e999 parses to: int() would overflow
        "max_context_length": float("-inf"),
        "seed": float("inf"),
        "top_k": float("nan"),
        "temperature": float("inf"),
    }
    req = job_request(payload, limits)
    assert req.max_tokens == 80 and req.max_context == 1024  # the defaults
    assert req.sampling.seed == -1 and req.sampling.top_k == 100
    assert req.sampling.temperature == 0.7
    job = HordeJob.from_pop({"id": "a", "ttl": float("inf"), "payload": {"prompt": "p"}})
    assert job is not None and job.ttl_s == 150.0


def test_model_name_follows_the_koboldcpp_convention() -> None:
    assert default_model_name("/m/gemma-3-270m-q4_k_m.gguf") == "koboldcpp/gemma-3-270m-q4_k_m"
    assert default_model_name("/m/Model.GGUF") == "koboldcpp/Model"


def test_pop_body_clamps_threads_and_amount() -> None:
    body = pop_body(
        name="w",
        models=["m"],
        limits=WorkerLimits(512, 128),
        threads=99,
        bridge_agent="a:1:u",
        nsfw=True,
        amount=0,
    )
    assert body["threads"] == 50 and body["amount"] == 1
    assert body["softprompts"] == [] and body["priority_usernames"] == []


@pytest.mark.parametrize(
    ("requested", "parallel", "preempt", "expected"),
    [
        (1, 4, False, 1),
        (8, 4, False, 3),
        (0, 4, False, 3),  # 0, the default: every spare slot
        (0, 2, False, 1),
        (0, 8, False, 7),
        (2, 2, False, 1),
        (1, 1, False, 0),
        (3, 1, True, 1),
        (0, 1, True, 1),
        (0, 1, False, 0),
    ],
)
def test_threads_keep_one_slot_for_local_users(
    requested: int, parallel: int, preempt: bool, expected: int
) -> None:
    assert horde_threads(requested, parallel, preempt) == expected


def test_job_request_maps_samplers_and_clamps_to_our_limits() -> None:
    payload = {
        "prompt": "Hello",
        "max_length": 900,
        "max_context_length": 4096,
        "temperature": 1.3,
        "top_p": 0.5,
        "top_k": 40,
        "min_p": 0.05,
        "typical": 0.9,
        "tfs": 0.95,
        "top_a": 0.1,
        "rep_pen": 1.2,
        "rep_pen_range": 9999,
        "stop_sequence": ["\nYou:", "", 5],
        "singleline": True,
        "use_default_badwordsids": True,
        "sampler_order": [6, 0, 1],
        "smoothing_factor": 0.3,
        "dynatemp_range": 0.4,
        "dynatemp_exponent": 1.5,
    }
    req = job_request(payload, WorkerLimits(max_context_length=1024, max_length=200))
    assert req.origin is Origin.HORDE and req.truncate_prompt is True
    assert req.max_tokens == 200 and req.max_context == 1024
    s = req.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.typical, s.tfs, s.top_a, s.rep_pen) == (
        1.3,
        0.5,
        40,
        0.05,
        0.9,
        0.95,
        0.1,
        1.2,
    )
    assert s.rep_pen_range == 1024  # never beyond the context
    assert s.sampler_order == (6, 0, 1) and (s.dynatemp_range, s.dynatemp_exponent) == (0.4, 1.5)
    assert req.stop == ("\nYou:", "\n") and req.ban_eos is True


def test_job_request_fills_defaults_for_missing_or_malformed_keys() -> None:
    req = job_request(
        {"prompt": "x", "temperature": "hot", "top_k": None, "seed": 7, "sampler_order": [9, "x"],
         "dynatemp_range": "wide"},
        WorkerLimits(512, 100),
        index=2,
    )
    assert req.sampling.temperature == 0.7 and req.sampling.top_k == 100
    assert req.sampling.sampler_order == SamplingParams().sampler_order and req.sampling.dynatemp_range == 0
    assert req.max_tokens == 80  # the KoboldAI default max_length
    assert req.sampling.seed == 9  # n > 1: seed + index


def test_job_without_a_text_prompt_cannot_be_served() -> None:
    with pytest.raises(UnservablePayload):
        job_request({"max_length": 10}, WorkerLimits(512, 100))
    with pytest.raises(UnservablePayload):
        job_request({"prompt": "x", "softprompt": "sp1"}, WorkerLimits(512, 100))


def test_pop_answers_become_jobs_or_none() -> None:
    assert HordeJob.from_pop({"id": None, "ids": [], "skipped": {"models": 3}}) is None
    job = HordeJob.from_pop(
        {"id": "a", "ids": ["a", "b"], "ttl": "bad", "payload": {"prompt": "p"}}
    )
    assert job is not None and job.ids == ("a", "b") and job.ttl_s == 150.0
    assert HordeJob.from_pop({"id": "c", "payload": None}).ids == ("c",)


def test_output_formatting_flags() -> None:
    text = "One. Two!\n\n\nThree <b> and half"
    assert format_generation(text, {}) == text
    assert format_generation(text, {"singleline": True}) == "One. Two!"
    assert format_generation(text, {"frmtrmblln": True}) == "One. Two!\nThree <b> and half"
    assert format_generation(text, {"frmttriminc": True}) == "One. Two!"
    assert format_generation("a <b> #c", {"frmtrmspch": True}) == "a b c"


def test_rc_table_actions() -> None:
    assert classify(401, "InvalidAPIKey") is Action.STOP
    assert classify(403, "WorkerMaintenance") is Action.MAINTENANCE
    assert classify(404, "InvalidJobID") is Action.DROP
    assert classify(400, "AbortedGen") is Action.DROP
    assert classify(400, "DuplicateGen") is Action.DONE
    assert classify(403, "TimeoutIP") is Action.SLOW_RETRY
    for status in (None, 408, 429, 500, 502, 503):
        assert classify(status, None) is Action.RETRY
    assert classify(400, None) is Action.STOP  # a schema error: retrying cannot help


def test_error_words_say_what_to_do() -> None:
    assert str(HordeError("pop", status=401, rc="InvalidAPIKey")).startswith(
        "the Horde rejected the API key (InvalidAPIKey): check --horde-key"
    )
    assert "--horde-url" in str(HordeError("pop", status=404))
    assert "retrying" in str(HordeError("pop", message="ConnectError"))


def test_backoff_is_exponential_jittered_and_capped() -> None:
    low = Backoff(base_s=2, cap_s=300, rng=lambda: 0.0)
    assert [low.next_delay() for _ in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 150, 150]
    high = Backoff(base_s=2, cap_s=300, rng=lambda: 1.0)
    assert [high.next_delay() for _ in range(4)] == [2, 4, 8, 16]
    assert high.next_delay(floor_s=60) == 60
    high.reset()
    assert high.next_delay() == 2


def test_empty_pops_slow_down_gently() -> None:
    pacer = EmptyPopPacer()
    delays = [pacer.next_delay() for _ in range(30)]
    assert delays[:10] == [1.0] * 10 and delays[10:25] == [2.0] * 15 and delays[25:] == [3.0] * 5
    pacer.reset()
    assert pacer.next_delay() == 1.0

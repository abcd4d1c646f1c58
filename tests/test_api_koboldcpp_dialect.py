"""KoboldCpp's fields on the OpenAI routes, without a model: which body speaks KoboldCpp, and
that every sampler field of SillyTavern's KoboldCpp body reaches the engine's SamplingParams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from koboldtui.api.ignored_fields import ignored_fields
from koboldtui.api.koboldcpp_dialect import (
    completion_logprob_count,
    openai_sampling,
    openai_seed,
    speaks_koboldcpp,
)
from koboldtui.api.validation import BadRequest

BODIES = Path(__file__).with_name("sillytavern")


def body(name: str) -> dict:
    return {k: v for k, v in json.loads((BODIES / f"{name}.json").read_text()).items() if not k.startswith("_")}


def test_sillytavern_koboldcpp_and_classic_bodies_speak_koboldcpp_chat_does_not():
    assert speaks_koboldcpp(body("textgen_koboldcpp")) and speaks_koboldcpp(body("kai_classic"))
    assert not speaks_koboldcpp(body("chat_completion_custom"))
    # fields other OpenAI-style servers take too say nothing
    assert not speaks_koboldcpp({"prompt": "x", "top_k": 40, "min_p": 0.1, "repetition_penalty": 1.1,
                                 "seed": 3, "logit_bias": {"5": 1}})
    assert speaks_koboldcpp({"prompt": "x", "rep_pen": 1.1})


def test_every_sampler_field_of_the_koboldcpp_body_is_applied():
    st = {**body("textgen_koboldcpp"), "dry_multiplier": 0.8, "xtc_probability": 0.5, "mirostat_mode": 2,
          "typical": 0.9, "rep_pen_range": 64, "sampler_order": [6, 0, 5], "grammar": 'root ::= "a"',
          "banned_strings": ["five"], "custom_token_bans": "12, 345,x", "dynatemp_range": 0.3,
          "temperature": 3.5}  # above OpenAI's 2: fine in KoboldCpp's ranges
    p = openai_sampling(st, logprobs=0, seed=openai_seed(st), grammar="")
    assert p.dry_multiplier == 0.8 and p.dry_sequence_breakers == ("\n", ":", '"', "*")
    assert p.xtc_probability == 0.5 and p.xtc_threshold == 0.1 and p.mirostat == 2
    assert p.typical == 0.9 and p.rep_pen == 1.2 and p.rep_pen_range == 64 and p.top_k == 40
    assert p.sampler_order == (6, 0, 5) and p.grammar == 'root ::= "a"' and p.banned_strings == ("five",)
    assert dict(p.logit_bias) == {12: float("-inf"), 345: float("-inf")} and p.dynatemp_range == 0.3
    assert p.temperature == 3.5 and p.seed == -1


def test_a_plain_openai_body_keeps_openai_defaults_and_ranges():
    plain = {"prompt": "x"}
    p = openai_sampling(plain, logprobs=0, seed=openai_seed(plain), grammar="")
    assert (p.temperature, p.top_p, p.top_k, p.rep_pen) == (1.0, 1.0, 0, 1.0)
    with pytest.raises(BadRequest, match="temperature"):
        openai_sampling({"prompt": "x", "temperature": 3.5}, logprobs=0, seed=-1, grammar="")
    assert openai_seed({"seed": 2**40 + 7}) == 7 and openai_seed({"sampler_seed": 9}) == 9
    # response_format's grammar wins over a raw one
    p = openai_sampling({"grammar": 'root ::= "a"'}, logprobs=0, seed=-1, grammar='root ::= "b"')
    assert p.grammar == 'root ::= "b"'


def test_completion_logprobs_are_clamped_to_five_as_koboldcpp():
    assert completion_logprob_count({"logprobs": 10}) == (True, 5)
    assert completion_logprob_count({"logprobs": 2}) == (True, 2)
    assert completion_logprob_count({"logprobs": 0}) == (True, 0)
    assert completion_logprob_count({"logprobs": True}) == (True, 1)
    assert completion_logprob_count({}) == (False, 0)


def test_ignored_fields_are_listed_per_route():
    ignored = ignored_fields()
    assert set(ignored) == {"/api/v1/generate", "/api/extra/generate/stream", "/v1/completions",
                            "/v1/chat/completions"}
    applied = {"grammar", "banned_strings", "custom_token_bans", "dry_multiplier", "xtc_threshold",
               "mirostat", "typical", "sampler_order", "rep_pen_range", "ban_eos_token", "bypass_eos",
               "render_special"}
    for route, names in ignored.items():
        assert not applied & set(names), route
        assert {"top_a", "tfs", "smoothing_factor", "rep_pen_slope"} <= set(names), route

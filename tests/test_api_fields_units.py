"""Request-field rules that need no model: leniency, clamping, turn markers, stop matching."""

from __future__ import annotations

import pytest

from koboldtui.api.kobold_fields import clamp_lengths, parse_logit_bias, sampling_from_body
from koboldtui.api.turn_markers import turn_stops
from koboldtui.api.validation import BadRequest, get_int, get_number, get_str_list


def test_numbers_as_strings_and_nulls_in_stop_lists():
    assert get_number({"t": "0.7"}, "t", 1.0) == 0.7 and get_int({"s": "42"}, "s", -1) == 42
    assert get_str_list({"stop": [None, "\n", "", "###"]}, "stop") == ("\n", "###")
    assert len(get_str_list({"stop": [f"s{i}" for i in range(256)]}, "stop")) == 256
    with pytest.raises(BadRequest, match="at most 256"):
        get_str_list({"stop": ["x"] * 257}, "stop")
    with pytest.raises(BadRequest, match="at most 512"):
        get_str_list({"stop": ["x" * 513]}, "stop")
    with pytest.raises(BadRequest, match="surrogate"):
        get_str_list({"stop": ["\ud800"]}, "stop")
    with pytest.raises(BadRequest, match="must be a number"):
        get_number({"t": "hot"}, "t", 1.0)


def test_kobold_clamps_max_length_like_koboldcpp():
    assert clamp_lengths(180, 4096, 2048) == (180, 2048)
    assert clamp_lengths(5000, 2048, 2048) == (2048 - 16, 2048)
    assert clamp_lengths(100, 16, 4096) == (4, 16)  # min(16 - 4, 16) = 12 tokens kept for the prompt


def test_sampler_fields_and_aliases():
    p = sampling_from_body({"repetition_penalty": 1.3, "mirostat": 2, "dry_multiplier": 0.8,
                            "dry_sequence_breakers": '["\\n", ":"]', "sampler_order": [6, 0, 5],
                            "banned_tokens": ["!"], "logit_bias": {"5": -100, "7": 250}})
    assert p.rep_pen == 1.3 and p.mirostat == 2 and p.dry_sequence_breakers == ("\n", ":")
    assert p.sampler_order == (6, 0, 5) and p.banned_strings == ("!",)
    assert dict(p.logit_bias) == {5: float("-inf"), 7: 100.0}
    assert sampling_from_body({"repeat_penalty": 1.2}).rep_pen == 1.2
    for bad in ({"sampler_order": [9]}, {"mirostat": 3}, {"logit_bias": [1, 2]}, {"logit_bias": {"x": 1}}):
        with pytest.raises(BadRequest):
            sampling_from_body(bad)
    assert parse_logit_bias({}) == ()


def test_turn_markers_from_the_rendered_prompt():
    plain = turn_stops("user: hi\nassistant:", ["user", "narrator"])
    assert "\nuser:" in plain and "\nUser:" in plain and "\nnarrator:" in plain
    gemma = turn_stops("<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", ["user"])
    assert gemma == ("<end_of_turn>", "<start_of_turn>")
    assert "<|im_end|>" in turn_stops("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", [])

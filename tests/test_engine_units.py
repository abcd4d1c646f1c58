"""Pure pieces of the engine: stop matching across tokens, and the AMX-safe repack choice."""

from __future__ import annotations

from koboldtui.engine.native import choose_repack
from koboldtui.engine.prompt_fit import kept_tail
from koboldtui.engine.stops import StopMatcher


def test_stop_matcher_holds_prefix_across_pieces():
    m = StopMatcher(["</s>", "\nUser:"])
    out = m.feed("Hello <") + m.feed("/") + m.feed("s> ignored")
    assert out == "Hello " and m.stopped


def test_stop_matcher_releases_false_alarm():
    m = StopMatcher(["\nUser:"])
    assert m.feed("a\nUs") == "a"
    assert m.feed("ual") == "\nUsual"
    assert m.flush() == ""


def test_stop_matcher_without_stops_passes_through():
    m = StopMatcher([])
    assert m.feed("abc") == "abc" and m.flush() == ""


def test_repack_disabled_on_amx_cpus():
    assert choose_repack(info="AVX512 = 1 |", flags={"avx512f", "amx_tile", "amx_int8"}, environ={}).use_extra_bufts is False
    assert choose_repack(info="AMX_INT8 = 1 |", flags=set(), environ={}).use_extra_bufts is False
    assert choose_repack(info="AVX2 = 1 |", flags={"avx2"}, environ={}).use_extra_bufts is True
    assert choose_repack(info="AMX_INT8 = 1", flags=set(), environ={"KOBOLDTUI_EXTRA_BUFTS": "1"}).use_extra_bufts


def test_the_cut_moves_in_steps_so_a_growing_chat_keeps_it_for_several_turns():
    room = 1000
    cuts = [n_rest - kept_tail(n_rest, room) for n_rest in range(990, 1800, 7)]  # one turn = 7 tokens
    assert cuts[:2] == [0, 0]  # still fits: nothing dropped
    assert all(tail <= room for tail in (kept_tail(n, room) for n in range(1000, 1800)))
    assert sorted(set(cuts)) == [0, 250, 500, 750, 1000]  # the oldest text goes a quarter at a time
    assert cuts == sorted(cuts)  # each cut point holds until the chat outgrows it again
    assert kept_tail(5000, 3) == 3 and kept_tail(10, 10) == 10 and kept_tail(4, 0) == 1

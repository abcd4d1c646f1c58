"""Slot choice and context-shift alignment (pure Python: no model needed)."""

from __future__ import annotations

import random

from koboldtui.engine.slots import MIN_SHIFT_MATCH, SlotPool, busy_runs, common_prefix, find_shift
from koboldtui.engine.types import Origin


def test_common_prefix_matches_a_plain_loop() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.randrange(3) for _ in range(rng.randrange(40))]
        b = a[: rng.randrange(len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(10))]
        expected = 0
        while expected < min(len(a), len(b)) and a[expected] == b[expected]:
            expected += 1
        assert common_prefix(a, b) == expected


def test_the_slot_holding_the_longest_prefix_is_chosen() -> None:
    pool = SlotPool(3)
    pool.slots[0].cached = [1, 2, 3, 4, 5, 6]
    pool.slots[1].cached = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    pool.slots[2].cached = [9, 9, 9]
    choice = pool.choose([1, 2, 3, 4, 5, 6, 7, 8, 10, 11], Origin.LOCAL, [0, 1, 2])
    assert choice is not None and choice.slot.seq_id == 1 and choice.reuse == 8
    # A busy slot is never chosen, even with the best prefix.
    choice = pool.choose([1, 2, 3, 4, 5, 6, 7, 8, 10, 11], Origin.LOCAL, [0, 2])
    assert choice is not None and choice.slot.seq_id == 0 and choice.reuse == 6


def test_cold_choice_prefers_empty_then_least_recently_used() -> None:
    pool = SlotPool(4)
    for i in (2, 0, 1):  # slot 2 used longest ago
        pool.slots[i].cached = [50 + i] * 8
        pool.take(pool.slots[i], Origin.LOCAL)
    choice = pool.choose([7, 7, 7, 7, 7], Origin.LOCAL, [0, 1, 2, 3])
    assert choice is not None and choice.slot.seq_id == 3 and choice.reuse == 0  # the empty one
    choice = pool.choose([7, 7, 7, 7, 7], Origin.LOCAL, [0, 1, 2])
    assert choice is not None and choice.slot.seq_id == 2  # least recently used


def test_a_horde_job_does_not_evict_a_local_chat_while_another_slot_will_do() -> None:
    pool = SlotPool(2)
    pool.slots[0].cached = [1, 2, 3, 4, 5, 6]
    pool.take(pool.slots[0], Origin.LOCAL)
    pool.slots[1].cached = [8, 8, 8, 8]
    pool.take(pool.slots[1], Origin.HORDE)  # used more recently than the local chat
    choice = pool.choose([1, 2, 3, 4, 5, 6, 7], Origin.HORDE, [0, 1])
    assert choice is not None and choice.slot.seq_id == 1 and choice.reuse == 0
    local = pool.choose([9, 9, 9, 9, 9], Origin.LOCAL, [0, 1])
    assert local is not None and local.slot.seq_id == 0  # LRU for a local newcomer
    only = pool.choose([9, 9, 9], Origin.HORDE, [0])
    assert only is not None and only.slot.seq_id == 0  # nothing else is free


def test_shift_lines_up_the_kept_prefix_and_the_newest_turns() -> None:
    memory = list(range(1000, 1010))
    turns = [list(range(100 * t, 100 * t + 30)) for t in range(1, 6)]
    cached = memory + turns[0] + turns[1] + turns[2] + turns[3]
    prompt = memory + turns[2] + turns[3] + turns[4]  # the two oldest turns were dropped
    plan = find_shift(cached, prompt, len(memory))
    assert plan is not None
    assert (plan.start, plan.discard) == (10, 60)
    shifted = cached[:plan.start] + cached[plan.start + plan.discard:]
    assert shifted[:plan.reuse] == prompt[:plan.reuse] and plan.reuse == 10 + 60
    pool = SlotPool(1)
    pool.slots[0].cached = cached
    choice = pool.choose(prompt, Origin.LOCAL, [0])
    assert choice is not None and choice.shift == plan and choice.reuse == 70


def test_no_shift_without_a_long_enough_match() -> None:
    cached = list(range(100))
    assert find_shift(cached, list(range(10)) + [500] * MIN_SHIFT_MATCH, 10) is None
    short = list(range(10)) + list(range(50, 50 + MIN_SHIFT_MATCH - 1))
    assert find_shift(cached, short, 10) is None


def test_cold_choice_keeps_busy_slots_together() -> None:
    pool = SlotPool(6)
    for i in (5, 2, 3, 4):  # slot 5 was used longest ago
        pool.slots[i].cached = [60 + i] * 8
        pool.take(pool.slots[i], Origin.LOCAL)
    # Slots 0 and 1 are busy: slot 2 continues their run, any other would open a gap.
    choice = pool.choose([7] * 6, Origin.LOCAL, [2, 3, 4, 5])
    assert choice is not None and choice.slot.seq_id == 2
    assert busy_runs({0, 1, 2}) == 1 and busy_runs({0, 2, 4}) == 3


def test_no_shift_into_the_middle_of_another_conversation() -> None:
    shared = list(range(500, 540))  # e.g. the same character card, after different openings
    cached = [1] + [7] * 20 + shared + list(range(900, 1000))
    prompt = [1] + [8] * 20 + shared + list(range(2000, 2050))
    assert find_shift(cached, prompt, 1) is None

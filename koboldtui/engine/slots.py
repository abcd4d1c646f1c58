"""Sequence slots that remember: which tokens each slot's KV holds, and which slot a request gets.

A finished request leaves its tokens and KV in its slot (llama-server's per-slot prompt
cache). The next request takes the free slot whose cached tokens share the longest prefix
with its prompt, so a chat front end that resends the whole conversation every turn only
pays for what is new. Pure Python: the engine applies the plan to llama.cpp's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from koboldtui.engine.types import Origin

# A cached prefix shorter than this is not worth choosing a slot for (a shared BOS token
# or a two-token opening would otherwise steal another chat's slot).
MIN_USEFUL_PREFIX = 4
# A context shift must line up at least this many cached tokens with the new prompt,
# and the run must reach to within MAX_TAIL_DROP tokens of the cache's end.
MIN_SHIFT_MATCH = 16
MAX_TAIL_DROP = 32


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case (a chat that only grew): one C-speed comparison
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]: bisect on slice equality
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo if a[lo] != b[lo] else hi


def busy_runs(ids: set[int]) -> int:
    """How many runs of consecutive ids: {0,1,2} is one, {0,2,4} three."""
    return sum(1 for i in ids if i - 1 not in ids)


@dataclass(frozen=True)
class ShiftPlan:
    """Drop ``cached[start:start + discard]`` and move what follows down by ``discard``.

    Afterwards the slot's first ``reuse`` tokens equal the prompt's first ``reuse``.
    """

    start: int
    discard: int
    reuse: int


def find_shift(cached: list[int], prompt: list[int], n_prefix: int) -> ShiftPlan | None:
    """KoboldCpp's ContextShift alignment: the prompt kept its first ``n_prefix`` tokens
    (the system prompt / memory) and lost its oldest turns after them, so its part after
    the prefix reappears further on in the cache. Find where, so the KV can be shifted
    instead of recomputed. None when nothing long enough lines up."""
    probe = prompt[n_prefix:n_prefix + MIN_SHIFT_MATCH]
    if len(probe) < MIN_SHIFT_MATCH:
        return None
    first = probe[0]
    best: ShiftPlan | None = None
    j = n_prefix + 1
    last = len(cached) - MIN_SHIFT_MATCH
    while j <= last:  # every place the probe occurs: a chat repeats itself, keep the longest run
        try:
            j = cached.index(first, j, last + 1)
        except ValueError:
            break
        if cached[j:j + MIN_SHIFT_MATCH] == probe:
            match = common_prefix(cached[j:], prompt[n_prefix:])
            # ContextShift's pattern only: the cache's newest part continues the prompt (up to a
            # trimmed answer tail). A run found in the middle of an unrelated chat is not reused:
            # its KV was computed after other text than this prompt has.
            reaches_end = j + match >= len(cached) - MAX_TAIL_DROP or n_prefix + match >= len(prompt)
            if reaches_end and (best is None or n_prefix + match > best.reuse):
                best = ShiftPlan(start=n_prefix, discard=j - n_prefix, reuse=n_prefix + match)
            if j + match >= len(cached):
                break  # the run reaches the end of the cache: nothing later can beat it
        j += 1
    return best


@dataclass
class Slot:
    """One KV stream (``seq_id``) and the tokens it holds at positions 0..len(cached)-1."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    last_used: int = 0  # admission counter: lower = used longer ago
    owner: Origin | None = None  # who left the cache here
    # Sliding-window models: window cells below this position may have been overwritten
    # (see prompt_cache.py); ``shifted``: the slot's KV was shifted since it was last empty.
    safe_from: int = 0
    shifted: bool = False

    def forget(self) -> None:
        self.cached = []
        self.owner = None
        self.safe_from = 0
        self.shifted = False


@dataclass(frozen=True)
class SlotChoice:
    """The slot a request takes, and how many of its prompt tokens the cache already holds
    (by prefix, possibly after a shift)."""

    slot: Slot
    prefix: int  # common prefix with the cached tokens, no shift
    shift: ShiftPlan | None = None

    @property
    def reuse(self) -> int:
        return self.shift.reuse if self.shift else self.prefix


class SlotPool:
    """Picks slots: longest cached prefix first; otherwise a cold slot, least recently used,
    never a local user's cached chat for a Horde job while another free slot will do."""

    def __init__(self, parallel: int) -> None:
        self.slots = [Slot(i) for i in range(parallel)]
        self._clock = 0

    def choose(self, prompt: list[int], origin: Origin, free_ids: list[int]) -> SlotChoice | None:
        """The best of the free slots for ``prompt``, or None when none is free."""
        free = [self.slots[i] for i in free_ids]
        if not free:
            return None
        best: SlotChoice | None = None
        for slot in free:
            if origin is Origin.HORDE and slot.owner is Origin.LOCAL:
                continue  # a Horde job never reuses (and so overwrites) a local chat
            choice = self._match(slot, prompt)
            if choice.reuse >= min(MIN_USEFUL_PREFIX, len(prompt)) and (
                    best is None or choice.reuse > best.reuse):
                best = choice
        if best is not None:
            return best
        busy = {s.seq_id for s in self.slots} - set(free_ids)
        return SlotChoice(self._coldest(free, origin, busy), prefix=0)

    def cold(self, origin: Origin, free_ids: list[int]) -> Slot:
        """A slot for a sequence that needs none of the cached tokens (it will get a copy)."""
        busy = {s.seq_id for s in self.slots} - set(free_ids)
        return self._coldest([self.slots[i] for i in free_ids], origin, busy)

    @staticmethod
    def _match(slot: Slot, prompt: list[int]) -> SlotChoice:
        prefix = common_prefix(slot.cached, prompt)
        if prefix == 0 or prefix >= len(prompt) or prefix >= len(slot.cached):
            return SlotChoice(slot, prefix)
        # The prompt diverges inside the cache: maybe older turns were dropped after a kept
        # prefix (the client, or fit_prompt keeping ``n_keep`` tokens, cut the conversation).
        shift = find_shift(slot.cached, prompt, prefix)
        if shift is not None and shift.reuse > prefix:
            return SlotChoice(slot, prefix, shift)
        return SlotChoice(slot, prefix)

    @staticmethod
    def _coldest(free: list[Slot], origin: Origin, busy: set[int]) -> Slot:
        """A Horde job takes a local user's cache only when nothing else is free; then the
        slot that keeps busy slots in one run (llama.cpp batches only consecutive sequence
        ids together without a unified KV: gaps cost a graph pass each, see the README);
        then empty before cached, least recently used, lowest id."""
        def rank(slot: Slot) -> tuple[int, int, int, int]:
            evicts_local = 1 if origin is Origin.HORDE and slot.owner is Origin.LOCAL else 0
            return (evicts_local, busy_runs(busy | {slot.seq_id}), 1 if slot.cached else 0,
                    slot.last_used if slot.cached else slot.seq_id)
        return min(free, key=rank)

    def take(self, slot: Slot, origin: Origin) -> None:
        self.touch(slot)
        slot.owner = origin

    def touch(self, slot: Slot) -> None:
        """Mark the slot used now (LRU order)."""
        self._clock += 1
        slot.last_used = self._clock

"""OpenAI ``n`` > 1: requests with the same prompt share one prompt pass.

Kept apart from the decode loop because it is one self-contained policy: the first
sequence feeding a prompt leads, identical newcomers wait in their own slot as its twins,
and when the leader's prompt completes its KV is copied to each twin, which then samples
from the leader's logits with its own sampler. If the leader ends first, its twins feed
the prompt themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

import llama_cpp

from koboldtui.engine.sequence import Sequence
from koboldtui.engine.slots import SlotPool
from koboldtui.engine.types import Origin, RequestState


class TwinPrompts:
    """Pairs sequences that share a prompt and copies the leader's KV to its twins."""

    def __init__(self, mem: llama_cpp.llama_memory_t, pool: SlotPool) -> None:
        self._mem = mem
        self._pool = pool

    @staticmethod
    def leader_for(seq: Sequence, running: Iterable[Sequence | None]) -> Sequence | None:
        """A running sequence still feeding exactly this prompt (OpenAI ``n`` > 1), if any."""
        if seq.preemptions or seq.request.origin is not Origin.LOCAL or len(seq.prompt_tokens) < 2:
            return None
        for other in running:
            if (other is not None and other.state is RequestState.PROMPT and other.twin_of is None
                    and not other.generated and other.preemptions == 0 and other.to_feed
                    and other.prompt_tokens == seq.prompt_tokens and not other.aborted):
                return other
        return None

    def fork(self, outputs: list[tuple[Sequence, int]]) -> int:
        """Leaders whose prompt just completed: copy their KV to each waiting twin, which then
        samples its first token from the leader's logits with its own sampler. Returns how
        many twins got a copy (prompts not processed again)."""
        forked = 0
        for seq, index in list(outputs):
            twins, seq.twins = seq.twins, []
            for twin in twins:
                if twin.twin_of is not seq or twin.aborted or twin.finish_reason is not None:
                    continue
                assert seq.seq_id is not None and twin.seq_id is not None
                src, dst = self._pool.slots[seq.seq_id], self._pool.slots[twin.seq_id]
                llama_cpp.llama_memory_seq_cp(self._mem, seq.seq_id, twin.seq_id, -1, -1)
                dst.cached, dst.safe_from, dst.shifted = list(src.cached), src.safe_from, src.shifted
                twin.n_past, twin.twin_of, twin.cached_tokens = seq.n_past, None, seq.cached_tokens
                outputs.append((twin, index))
                forked += 1
        return forked

    @staticmethod
    def orphan(seq: Sequence) -> None:
        """A leader ended before its prompt was done: its twins feed the prompt themselves."""
        for twin in seq.twins:
            if twin.twin_of is seq:
                twin.twin_of = None
                twin.to_feed = list(twin.prompt_tokens)
        seq.twins = []

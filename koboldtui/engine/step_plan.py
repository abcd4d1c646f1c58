"""Filling one decode step's ``llama_batch`` and settling positions after the decode.

Separate from the decode loop because it is the part with the arithmetic: which tokens go
into a step (one per generating sequence, then prompt chunks, or a prompt-only step for a
short new local prompt), how positions and slot records advance once a decode succeeds,
and what survives a step that llama.cpp interrupted (the micro-batches it finished) or
must be rolled back. The loop itself only decides when to step and samples the outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import llama_cpp

from koboldtui.engine.prompt_cache import PromptCache
from koboldtui.engine.sequence import Sequence
from koboldtui.engine.slots import SlotPool
from koboldtui.engine.types import Origin, RequestState

# A new local request with at most this many prompt tokens left to process (after the
# prompt cache) interrupts the step in flight and gets a prompt-only step of its own.
SHORT_PROMPT_TOKENS = 64


class StepPlan(NamedTuple):
    """What one step put in the batch: who generates, which prompt chunks, whose logits."""

    generating: list[Sequence]
    prompt_takes: list[tuple[Sequence, list[int]]]
    outputs: list[tuple[Sequence, int]]  # (sequence, batch index of its logits)


class StepPlanner:
    """Owns the step's ``llama_batch``; plans it, then advances or rolls back the sequences."""

    def __init__(self, mem: llama_cpp.llama_memory_t, cache: PromptCache, pool: SlotPool,
                 n_batch: int, capacity: int) -> None:
        self._mem = mem
        self._cache = cache
        self._pool = pool
        self._n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(capacity, 0, 1)

    def free(self) -> None:
        """Free the batch (the engine's close, after the decode thread stopped)."""
        llama_cpp.llama_batch_free(self.batch)

    def plan(self, active: list[Sequence]) -> StepPlan:
        """Fill the batch: one token per generating sequence, then prompt chunks."""
        batch = self.batch
        n = 0
        outputs: list[tuple[Sequence, int]] = []

        def add(token: int | None, pos: int, seq_id: int | None, want_logits: bool) -> None:
            # Sequences in a step always have a slot, and generating ones a sampled token.
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = 1 if want_logits else 0
            n += 1

        generating = [s for s in active if s.state is RequestState.GENERATING and s.last_token is not None]
        prompts = sorted((s for s in active if s.state is RequestState.PROMPT and s.twin_of is None),
                         key=lambda s: s.sort_key)
        # A new local request with a short prompt gets a prompt-only step: its first token comes
        # after one small step instead of a full step of every sequence (TTFT under load), and
        # the others lose one step. Long prompts and Horde jobs never get this, so nothing
        # can stall the generating sequences for long.
        fast = [s for s in prompts if s.request.origin is Origin.LOCAL and not s.generated
                and s.preemptions == 0 and len(s.to_feed) <= SHORT_PROMPT_TOKENS]
        if fast and generating:
            generating, prompts = [], fast
        for seq in generating:  # one token for every generating sequence first: they never stall
            add(seq.last_token, seq.n_past, seq.seq_id, True)
            outputs.append((seq, n - 1))
        budget = self._n_batch - n
        prompt_takes: list[tuple[Sequence, list[int]]] = []
        for seq in prompts:
            if budget <= 0:
                break
            chunk = seq.to_feed[:budget]
            completes = len(chunk) == len(seq.to_feed)
            for i, token in enumerate(chunk):
                add(token, seq.n_past + i, seq.seq_id, completes and i == len(chunk) - 1)
            budget -= len(chunk)
            prompt_takes.append((seq, chunk))
            if completes:
                outputs.append((seq, n - 1))
        batch.n_tokens = n
        return StepPlan(generating, prompt_takes, outputs)

    def decoded(self, plan: StepPlan) -> None:
        """The step's decode succeeded: every planned token is in the KV now."""
        for seq in plan.generating:
            self.advance(seq, [seq.last_token])  # type: ignore[list-item]
        for seq, chunk in plan.prompt_takes:
            self.advance(seq, chunk)

    def advance(self, seq: Sequence, tokens: list[int]) -> None:
        """``tokens`` are in the sequence's KV now: move its position and its slot's record."""
        assert seq.seq_id is not None
        self._cache.fed(self._pool.slots[seq.seq_id], tokens)
        seq.n_past += len(tokens)
        if seq.state is RequestState.PROMPT:
            del seq.to_feed[:len(tokens)]

    def keep_finished_work(self, plan: StepPlan) -> None:
        """After an interrupted step: llama.cpp kept the micro-batches it finished. Prompt
        tokens that landed stay (except a completing chunk's last token: its logits are gone);
        a generating sequence's token is decoded again, since its logits are gone too."""
        for seq in plan.generating:
            self.roll_back_to(seq, seq.n_past)
        for seq, chunk in plan.prompt_takes:
            assert seq.seq_id is not None
            landed = int(llama_cpp.llama_memory_seq_pos_max(self._mem, seq.seq_id)) + 1 - seq.n_past
            keep = max(0, min(landed, len(chunk) - (1 if len(chunk) == len(seq.to_feed) else 0)))
            if self.roll_back_to(seq, seq.n_past + keep) and keep:
                self.advance(seq, chunk[:keep])

    def roll_back_to(self, seq: Sequence, n_past: int) -> bool:
        """Drop the sequence's KV past ``n_past``; where the memory cannot drop part of a
        sequence (recurrent/hybrid models), feed the whole sequence again. False then."""
        assert seq.seq_id is not None
        slot = self._pool.slots[seq.seq_id]
        if self._cache.rollback(slot, n_past):
            return True
        seq.to_feed = list(seq.prompt_tokens) + list(seq.generated)  # generated ends with last_token
        seq.n_past = 0
        seq.last_token = None
        seq.state = RequestState.PROMPT
        return False

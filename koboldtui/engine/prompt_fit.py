"""Make a request's prompt fit its context: cut from the left (KoboldAI) or refuse (OpenAI).

The cut keeps the request's first ``n_keep`` tokens (memory, system prompt) and drops the
oldest tokens after them, so the engine can line the rest up with a slot's cached KV and
shift it (ContextShift) instead of processing the whole context again.

The oldest text goes in steps of a quarter of what may go (``CUT_STEPS``), as llama-server
discards half of the shiftable part and KoboldCpp's old SmartContext half the context: a
chat that grows by one turn keeps the same cut for several turns, so those turns are pure
cache hits, and only every few turns does one pay a shift. A shift is not free: llama.cpp
re-rotates every cell of the whole KV cache, all slots' (measured here: +12 ms with one
1,024-token slot, +40 ms with two, +170 ms with eight; a short prompt's TTFT is ~20 ms).
The step depends only on the request, so the cut is the same with or without a cache.
"""

from __future__ import annotations

from koboldtui.engine.native import Vocab
from koboldtui.engine.types import EngineError, GenerationRequest, PromptTooLongError


def fit_prompt(vocab: Vocab, request: GenerationRequest, n_ctx_per_seq: int) -> tuple[list[int], int, int]:
    """Tokenize and make the request fit its context (left-truncate or refuse)."""
    if request.max_tokens < 1:
        raise EngineError("max_tokens must be at least 1")
    tokens = vocab.tokenize(request.prompt)
    if not tokens:
        if vocab.bos < 0:
            raise EngineError("the prompt is empty and this model has no BOS token: send some text")
        tokens = [vocab.bos]
    # At least one prompt token and one generated token, whatever the client asked for.
    limit = max(2, min(request.max_context or n_ctx_per_seq, n_ctx_per_seq))
    if not request.truncate_prompt:
        if len(tokens) + request.max_tokens > n_ctx_per_seq:
            raise PromptTooLongError(len(tokens), request.max_tokens, n_ctx_per_seq)
        return tokens, request.max_tokens, 0
    max_tokens = max(1, min(request.max_tokens, limit - 1))  # KoboldCpp clamps max_length
    budget = limit - max_tokens
    if len(tokens) <= budget:
        return tokens, max_tokens, 0
    head = kept_head(tokens, request.n_keep, budget, vocab.bos if vocab.add_bos else None)
    fitted = tokens[:head] + tokens[len(tokens) - kept_tail(len(tokens) - head, budget - head):]
    return fitted, max_tokens, len(tokens) - len(fitted)


CUT_STEPS = 4  # the oldest text is dropped in steps of 1/CUT_STEPS of the room after the head


def kept_tail(n_rest: int, room: int) -> int:
    """How many of the newest ``n_rest`` tokens after the head survive a cut into ``room``:
    the oldest go in whole steps of ``room // CUT_STEPS`` counted from the head, so the cut
    point stays put while a chat grows by less than a step (at least one token stays)."""
    step = max(1, room // CUT_STEPS)
    drop = -(-(n_rest - room) // step) * step  # the excess, rounded up to whole steps
    return max(1, min(room, n_rest - drop))


def kept_head(tokens: list[int], n_keep: int, budget: int, bos: int | None) -> int:
    """How many leading tokens survive a cut: the request's ``n_keep`` (memory / system
    prompt), at least the BOS token, at most half the budget (the newest text must fit too)."""
    head = max(n_keep, 1 if bos is not None and tokens and tokens[0] == bos else 0)
    return min(head, budget // 2) if head > 1 else min(head, budget)

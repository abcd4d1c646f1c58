"""Make a request's prompt fit its context: cut from the left (KoboldAI) or refuse (OpenAI).

The cut keeps the request's first ``n_keep`` tokens (memory, system prompt) and drops the
oldest tokens after them, so the engine can line the rest up with a slot's cached KV and
shift it (ContextShift) instead of processing the whole context again.
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
    fitted = tokens[:head] + tokens[len(tokens) - (budget - head):]
    return fitted, max_tokens, len(tokens) - len(fitted)


def kept_head(tokens: list[int], n_keep: int, budget: int, bos: int | None) -> int:
    """How many leading tokens survive a cut: the request's ``n_keep`` (memory / system
    prompt), at least the BOS token, at most half the budget (the newest text must fit too)."""
    head = max(n_keep, 1 if bos is not None and tokens and tokens[0] == bos else 0)
    return min(head, budget // 2) if head > 1 else min(head, budget)

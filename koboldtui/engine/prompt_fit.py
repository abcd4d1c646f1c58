"""Make a request's prompt fit its context: cut from the left (KoboldAI) or refuse (OpenAI)."""

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
    # The kept prefix (BOS, KoboldAI memory: request.n_keep) survives; the oldest text after it goes.
    head = max(request.n_keep, 1 if vocab.add_bos and tokens[0] == vocab.bos else 0)
    head = max(0, min(head, budget - 1))  # at least the prompt's last token stays
    fitted = tokens[:head] + tokens[len(tokens) - (budget - head):]
    return fitted, max_tokens, len(tokens) - len(fitted)

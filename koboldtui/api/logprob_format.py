"""Token log-probabilities in the shapes clients read: OpenAI chat (also KoboldCpp's), and
OpenAI's legacy completions shape.

The numbers come from the engine (engine/sampling.py ``token_logprob``): the model's own
distribution at each sampled position, before samplers reshape it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from koboldtui.engine.interface import TextEngine
from koboldtui.engine.types import GenerationResult, TokenLogprob


def _sampled(result: GenerationResult) -> Sequence[TokenLogprob]:
    """One entry per generated token (a final end-of-generation token is not part of the text)."""
    return (result.logprobs or ())[: result.completion_tokens]


def _token(engine: TextEngine, token: int, logprob: float) -> dict[str, Any]:
    text = engine.detokenize([token])
    return {"token": text, "token_id": token, "logprob": round(logprob, 6), "bytes": list(text.encode("utf-8"))}


def content_logprobs(engine: TextEngine, result: GenerationResult, top_n: int) -> list[dict[str, Any]]:
    """OpenAI chat ``logprobs.content`` (KoboldCpp answers in the same shape)."""
    return [dict(_token(engine, lp.token, lp.logprob),
                 top_logprobs=[_token(engine, t, v) for t, v in lp.top[:top_n]])
            for lp in _sampled(result)]


def completion_logprobs(engine: TextEngine, result: GenerationResult, top_n: int) -> dict[str, Any]:
    """OpenAI ``/v1/completions`` ``logprobs``: parallel lists of tokens, logprobs and top maps."""
    tokens, values, tops, offsets = [], [], [], []
    offset = 0
    for lp in _sampled(result):
        text = engine.detokenize([lp.token])
        tokens.append(text)
        values.append(round(lp.logprob, 6))
        tops.append({engine.detokenize([t]): round(v, 6) for t, v in lp.top[:top_n]})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

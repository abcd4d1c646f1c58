"""Per-sequence sampler chains built from KoboldAI sampler fields with llama.cpp's native samplers.

Native samplers keep per-step Python work small (ENGINE.md: Python sampling over a 262k
vocab costs ~2 ms per sequence per step). Order follows KoboldCpp's default: penalties,
top-k, typical, top-p, min-p, temperature, then the random draw. ``tfs`` and ``top_a``
have no llama.cpp sampler in this version; they are accepted and ignored (documented).
"""

from __future__ import annotations

import random

import llama_cpp

from koboldtui.engine.types import SamplingParams


class SamplerChain:
    """Owns one llama.cpp sampler chain; ``sample`` also records the token for penalties."""

    def __init__(self, params: SamplingParams, n_vocab: int, eog_tokens: list[int], ban_eos: bool) -> None:
        self.seed = params.seed if params.seed is not None and params.seed >= 0 else random.randrange(2**31)
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain = llama_cpp.llama_sampler_chain_init(chain_params)
        self._bias = None
        add = lambda s: llama_cpp.llama_sampler_chain_add(self._chain, s)
        if ban_eos and eog_tokens:
            self._bias = (llama_cpp.llama_logit_bias * len(eog_tokens))()
            for i, tok in enumerate(eog_tokens):
                self._bias[i].token = tok  # type: ignore[assignment]
                self._bias[i].bias = float("-inf")
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(eog_tokens), self._bias))
        penalties_on = params.rep_pen != 1.0 or params.presence_penalty or params.frequency_penalty
        if penalties_on and params.rep_pen_range != 0:
            last_n = params.rep_pen_range if params.rep_pen_range > 0 else -1
            add(
                llama_cpp.llama_sampler_init_penalties(
                    n_vocab, last_n, max(params.rep_pen, 1e-3),
                    float(params.frequency_penalty), float(params.presence_penalty),
                )
            )
        if params.temperature <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(int(params.top_k)))
        if 0.0 < params.typical < 1.0:
            add(llama_cpp.llama_sampler_init_typical(float(params.typical), 1))
        if 0.0 < params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(float(params.top_p), 1))
        if params.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(float(params.min_p), 1))
        add(llama_cpp.llama_sampler_init_temp(float(params.temperature)))
        add(llama_cpp.llama_sampler_init_dist(self.seed))

    def sample(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> int:
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))

    def accept(self, token: int) -> None:
        """Record a token the chain did not sample itself (e.g. replayed after preemption)."""
        llama_cpp.llama_sampler_accept(self._chain, token)

    def free(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None

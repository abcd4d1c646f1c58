"""What a request needs before the decode thread can take it: fitted tokens and a sampler.

Kept apart from the engine because it is the one part of a submit that is slow (tokenizing
a long prompt, fitting it to the context, compiling a grammar) and thread-safe (read-only
on the vocabulary), so the engine runs it in a worker thread and only the cheap enqueue on
the event loop. OpenAI ``n`` choices share one prompt: it is fitted once for all of them.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from koboldtui.engine import native
from koboldtui.engine.prompt_fit import fit_prompt
from koboldtui.engine.sampling import SamplerChain
from koboldtui.engine.types import GenerationRequest


class Prepared(NamedTuple):
    """A request's fitted prompt and sampler chain, built off the event loop."""

    prompt: list[int]
    max_tokens: int
    truncated: int
    sampler: SamplerChain


def free_unused(work: asyncio.Future[list[Prepared]]) -> None:
    """Free the samplers of requests whose submitter was cancelled while they were prepared."""
    if not work.cancelled() and work.exception() is None:
        for prepared in work.result():
            prepared.sampler.free()


class RequestPreparer:
    """Tokenizes, fits and builds samplers for one engine's vocabulary and per-slot context."""

    def __init__(self, vocab: native.Vocab, n_ctx_per_seq: int) -> None:
        self.vocab = vocab
        self.n_ctx_per_seq = n_ctx_per_seq

    def prepare(self, request: GenerationRequest) -> Prepared:
        """Tokenize, fit and build the sampler chain (raises PromptTooLongError and the like)."""
        prompt, max_tokens, truncated = fit_prompt(self.vocab, request, self.n_ctx_per_seq)
        sampler = SamplerChain(request.sampling, self.vocab, request.ban_eos, prompt, self.n_ctx_per_seq)
        return Prepared(prompt, max_tokens, truncated, sampler)

    def prepare_many(self, requests: list[GenerationRequest]) -> list[Prepared]:
        """``prepare`` for requests with one prompt: fitted once, one sampler each (all freed
        if a later one fails to build)."""
        first = self.prepare(requests[0])
        prepared = [first]
        try:
            for request in requests[1:]:
                sampler = SamplerChain(request.sampling, self.vocab, request.ban_eos, first.prompt,
                                       self.n_ctx_per_seq)
                prepared.append(first._replace(prompt=list(first.prompt), sampler=sampler))
        except BaseException:
            for done in prepared:
                done.sampler.free()
            raise
        return prepared

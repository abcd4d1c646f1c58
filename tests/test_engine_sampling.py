"""Sampler chains on real logits of the bundled model: the top-k cut before the penalties changes
no token, penalties see the prompt, and tiny temperatures are greedy."""

from __future__ import annotations

import llama_cpp
import pytest

from koboldtui.engine import native, sampling
from koboldtui.engine.stops import StopMatcher
from koboldtui.engine.types import SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoded(bundled_model):
    """(vocab, ctx, prompt tokens, index of the last logits) after decoding one prompt."""
    model, _ = native.load_model(bundled_model, gpu_layers=0)
    ctx = native.create_context(model, n_ctx=512, n_batch=256, n_ubatch=256, n_seq_max=1, threads=2)
    vocab = native.Vocab(model)
    prompt = vocab.tokenize("the cat and the dog and the cat and the dog and the cat and the")
    batch = llama_cpp.llama_batch_init(len(prompt), 0, 1)
    for i, tok in enumerate(prompt):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, 1 if i == len(prompt) - 1 else 0
    batch.n_tokens = len(prompt)
    assert llama_cpp.llama_decode(ctx, batch) == 0
    yield vocab, ctx, prompt, len(prompt) - 1
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def draws(params, decoded, n=40, prefilter=True, in_place=True):
    vocab, ctx, prompt, idx = decoded
    sampling.PREFILTER, sampling.IN_PLACE = prefilter, in_place
    chain = sampling.SamplerChain(params, vocab, False, prompt, 512)
    try:
        return [chain.sample(ctx, idx) for _ in range(n)]
    finally:
        chain.free()
        sampling.PREFILTER = sampling.IN_PLACE = True


@pytest.mark.parametrize("params", [
    SamplingParams(seed=3),  # KoboldCpp defaults: rep_pen 1.1 over 320, top_k 100, top_p 0.92
    SamplingParams(temperature=0.0, rep_pen=1.3),
    SamplingParams(seed=4, rep_pen=1.2, presence_penalty=0.5, frequency_penalty=0.3, top_k=40),
    SamplingParams(seed=5, dry_multiplier=0.8, top_k=20),
])
def test_the_cut_before_the_penalties_changes_no_token(decoded, params):
    assert sampling.prefilter_size(params, [0], params.temperature == 0, 320, 512, 20) > 0
    assert draws(params, decoded, in_place=False) == draws(params, decoded, prefilter=False, in_place=False)


BAN = float("-inf")


@pytest.mark.parametrize(("params", "in_place"), [
    (SamplingParams(seed=3), True),  # KoboldCpp defaults
    (SamplingParams(temperature=0.0, rep_pen=1.3), True),
    (SamplingParams(seed=6, rep_pen=1.5, rep_pen_range=6, top_k=0, top_p=1.0), True),  # the window rolls
    (SamplingParams(seed=4, rep_pen=1.2, presence_penalty=0.5, top_k=40), True),
    (SamplingParams(seed=8, rep_pen=0.9, frequency_penalty=0.7, top_k=40), True),
    (SamplingParams(seed=9, logit_bias=((1, BAN), (236764, BAN))), True),  # bans commute with penalties
    (SamplingParams(seed=10, mirostat=2), True),
    (SamplingParams(seed=4, presence_penalty=0.5, frequency_penalty=0.3), False),  # fused multiply-add
    (SamplingParams(seed=11, logit_bias=((236764, 3.0),)), False),  # a finite bias goes first
    (SamplingParams(seed=12, sampler_order=(5, 6, 0, 1, 3, 4, 2)), False),  # temperature first
])
def test_penalties_on_the_logit_row_draw_the_same_tokens_as_llama_cpp(decoded, params, in_place):
    """The window's penalties applied to the logits (penalties.py) against llama.cpp's penalties
    sampler walking the whole vocabulary, seeded and greedy, 40 draws that each join the window."""
    order = list(params.sampler_order)
    assert sampling.penalties_in_place(params, order, params.temperature == 0, 320, dict(params.logit_bias).values()) \
        is in_place
    assert draws(params, decoded) == draws(params, decoded, prefilter=False, in_place=False)


def test_the_logit_row_is_put_back_for_twins_and_logprobs(decoded):
    vocab, ctx, prompt, idx = decoded
    row = llama_cpp.llama_get_logits_ith(ctx, idx)
    before = [row[t] for t in set(prompt)]
    chain = sampling.SamplerChain(SamplingParams(seed=1, rep_pen=2.0, logprobs=1), vocab, False, prompt, 512)
    try:
        chain.sample(ctx, idx)
    finally:
        chain.free()
    assert [row[t] for t in set(prompt)] == before
    unpenalised = sampling.token_logprob(ctx, idx, vocab.n_tokens, chain.logprobs[0].token, 1)
    assert chain.logprobs[0] == unpenalised


def test_penalties_see_the_prompt_and_tiny_temperature_is_greedy(decoded):
    greedy = draws(SamplingParams(temperature=0.0, rep_pen=1.0), decoded, n=1)
    penalised = draws(SamplingParams(temperature=0.0, rep_pen=3.0), decoded, n=1)
    assert greedy != penalised  # the prompt's "cat"/"dog" are penalised before any token is generated
    assert draws(SamplingParams(temperature=1e-38, rep_pen=1.0, seed=1), decoded, n=3) == greedy * 3
    whole = draws(SamplingParams(temperature=0.0, rep_pen=3.0, rep_pen_range=-1), decoded, n=1)
    assert whole == penalised  # -1 = the whole context, not "off"


def test_stop_matcher_many_stops_and_which_matched():
    stops = [f"\nName{i}:" for i in range(200)] + ["END"]
    m = StopMatcher(stops)
    out = m.feed("hello\nNa") + m.feed("me1") + m.feed("99: bye")
    assert out == "hello" and m.stopped and m.matched == "\nName199:"
    m = StopMatcher(["abcd", "c"])
    assert m.feed("ab") == "" and m.feed("c") == "ab" and m.matched == "c"

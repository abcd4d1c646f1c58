"""Per-sequence sampler chains built from KoboldAI sampler fields with llama.cpp's native samplers.

Native samplers keep per-step Python work small (ENGINE.md: Python sampling over a 262k
vocab costs ~2 ms per sequence per step). The chain is, in order:

1. token bans and biases (EOS ban, ``logit_bias``, ``banned_tokens``); a GBNF ``grammar``
   (llama.cpp's grammar sampler) checks the token the chain drew and only when it refuses
   it filters the vocabulary and the chain draws again (``GrammarCheck``);
2. the stages of KoboldCpp's ``sampler_order`` (ids: 0 top-k, 1 top-a, 2 tfs, 3 typical,
   4 top-p, 5 temperature, 6 repetition penalties), min-p right after top-p, DRY with the
   penalties, XTC just before the temperature; ``dynatemp_range`` makes the temperature
   llama.cpp's entropy-based dynamic temperature; a stage not listed is not applied;
3. the draw: mirostat 1/2 when asked (it replaces the truncation samplers, as in
   KoboldCpp), else the seeded random draw; temperature 0 (or below 1e-3) is greedy.

``top_a``, ``tfs`` and ``smoothing_factor`` have no llama.cpp sampler in this version: they
are accepted and ignored (README, and ``/api/extra/version`` feature flags). With
``grammar_retain_state`` the grammar goes on from where the last such request left it.

The penalties and DRY see the prompt, as in KoboldCpp and llama-server: the last
``rep_pen_range`` prompt tokens are accepted into their windows when the chain is built
(0 or -1 = the whole context).
"""

from __future__ import annotations

import ctypes
import math
import random
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import llama_cpp

from koboldtui.engine.grammar_limits import GrammarError, check_grammar
from koboldtui.engine.native import Vocab
from koboldtui.engine.penalties import WindowPenalties
from koboldtui.engine.types import EngineError, SamplingParams, TokenLogprob

GREEDY_BELOW = 1e-3  # temperatures this small are greedy (1e-38 would overflow the logits)
TOP_K, TOP_A, TFS, TYPICAL, TOP_P, TEMPERATURE, PENALTIES = range(7)
MAX_LOGPROBS = 20


__all__ = ["GrammarError", "SamplerChain"]


class SamplerChain:
    """Owns one llama.cpp sampler chain; ``sample`` also records the token for penalties."""

    def __init__(self, params: SamplingParams, vocab: Vocab, ban_eos: bool,
                 prompt: Sequence[int] = (), n_ctx: int = 0) -> None:
        self.params = params
        self.seed = params.seed if params.seed is not None and params.seed >= 0 else random.randrange(2**31)
        self.logprobs: list[TokenLogprob] | None = [] if params.logprobs > 0 else None
        self._n_vocab = vocab.n_tokens
        self._keep: list[object] = []  # ctypes arrays llama.cpp reads later
        self._grammar: GrammarCheck | None = None
        self._window: WindowPenalties | None = None  # penalties applied to the logits, not in the chain
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self._chain = llama_cpp.llama_sampler_chain_init(chain_params)
        try:
            self._build(params, vocab, ban_eos, list(prompt), n_ctx)
        except Exception:
            self.free()
            raise

    # ------------------------------------------------------------------ building
    def _add(self, sampler: llama_cpp.llama_sampler_p) -> llama_cpp.llama_sampler_p:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)
        return sampler

    def _build(self, p: SamplingParams, vocab: Vocab, ban_eos: bool, prompt: list[int], n_ctx: int) -> None:
        biases = dict(p.logit_bias)
        # An EOS ban and a grammar together would leave no token once the grammar is complete.
        if ban_eos and not p.grammar:
            biases.update({tok: float("-inf") for tok in vocab.eog_tokens})
        biases.update({tok: float("-inf") for tok in tokens_containing(vocab, p.banned_strings)})
        if biases:
            self._add(self._bias_sampler(biases))
        if p.grammar:
            grammar = retained_grammar(p.grammar) if p.grammar_retain_state and GRAMMAR_CHECK_FIRST else None
            if grammar is None:
                check_grammar(p.grammar)  # the choke point: no grammar reaches llama.cpp unchecked
                grammar = llama_cpp.llama_sampler_init_grammar(vocab.pointer, p.grammar.encode("utf-8"), b"root")
            if not grammar:
                raise GrammarError("the grammar could not be used: llama.cpp refused it (a <token> that is not "
                                   "one token of this model's vocabulary?)")
            if GRAMMAR_CHECK_FIRST:
                self._grammar = GrammarCheck(grammar, self._n_vocab, tokens_by_length(vocab))
            else:
                self._add(grammar)
        greedy = p.temperature < GREEDY_BELOW and p.mirostat == 0
        window = penalty_window(p.rep_pen_range, n_ctx, len(prompt))
        order = [s for s in dict.fromkeys(p.sampler_order) if 0 <= s <= 6]
        if penalties_in_place(p, order, greedy, window, biases.values()):
            self._window = WindowPenalties(self._n_vocab, window, max(p.rep_pen, 1e-3), float(p.frequency_penalty),
                                           float(p.presence_penalty), prompt)
        for i, stage in enumerate(order):
            if stage == PENALTIES and self._window is not None:
                continue  # applied to the logit row before each draw (sample)
            if stage == PENALTIES:
                cut = prefilter_size(p, order[i + 1:], greedy, window, n_ctx, len(prompt))
                if cut:
                    self._add(llama_cpp.llama_sampler_init_top_k(cut))
                self._penalties(p, vocab, prompt, window, n_ctx)
            elif greedy or p.mirostat:
                continue  # truncation and temperature do not change a greedy pick; mirostat replaces them
            elif stage == TOP_K and p.top_k > 0:
                self._add(llama_cpp.llama_sampler_init_top_k(int(p.top_k)))
            elif stage == TYPICAL and 0.0 < p.typical < 1.0:
                self._add(llama_cpp.llama_sampler_init_typical(float(p.typical), 1))
            elif stage == TOP_P:
                if 0.0 < p.top_p < 1.0:
                    self._add(llama_cpp.llama_sampler_init_top_p(float(p.top_p), 1))
                if p.min_p > 0.0:
                    self._add(llama_cpp.llama_sampler_init_min_p(float(p.min_p), 1))
            elif stage == TEMPERATURE:
                self._temperature(p)
        if greedy:
            self._add(llama_cpp.llama_sampler_init_greedy())
        elif p.mirostat == 1:
            self._temperature(p, with_xtc=False)
            self._add(llama_cpp.llama_sampler_init_mirostat(
                self._n_vocab, self.seed, float(p.mirostat_tau), float(p.mirostat_eta), 100))
        elif p.mirostat == 2:
            self._temperature(p, with_xtc=False)
            self._add(llama_cpp.llama_sampler_init_mirostat_v2(
                self.seed, float(p.mirostat_tau), float(p.mirostat_eta)))
        else:
            if TEMPERATURE not in order:
                self._xtc(p)
            self._add(llama_cpp.llama_sampler_init_dist(self.seed))

    def _bias_sampler(self, biases: dict[int, float]) -> llama_cpp.llama_sampler_p:
        outside = [t for t in biases if not 0 <= t < self._n_vocab]
        if outside:
            raise EngineError(f"logit_bias names token {outside[0]}, but this model's tokens are "
                              f"0-{self._n_vocab - 1}")
        array = (llama_cpp.llama_logit_bias * len(biases))()
        for i, (token, bias) in enumerate(biases.items()):
            array[i].token = token
            array[i].bias = bias
        self._keep.append(array)
        return llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(biases), array)

    def _penalties(self, p: SamplingParams, vocab: Vocab, prompt: list[int], window: int,
                   n_ctx: int) -> None:
        if window > 0 and (p.rep_pen != 1.0 or p.presence_penalty or p.frequency_penalty):
            sampler = self._add(llama_cpp.llama_sampler_init_penalties(
                self._n_vocab, window, max(p.rep_pen, 1e-3), float(p.frequency_penalty),
                float(p.presence_penalty)))
            for token in prompt[-window:]:
                llama_cpp.llama_sampler_accept(sampler, token)
        if p.dry_multiplier > 0:
            breakers = [b.encode("utf-8") for b in p.dry_sequence_breakers if b]
            array = (ctypes.c_char_p * max(1, len(breakers)))(*breakers)
            self._keep.append(array)
            dry_window = penalty_window(p.dry_penalty_last_n, n_ctx, len(prompt))
            sampler = self._add(llama_cpp.llama_sampler_init_dry(
                vocab.pointer, float(p.dry_multiplier), float(p.dry_base), int(p.dry_allowed_length),
                dry_window, array, len(breakers)))
            for token in prompt[-dry_window:]:
                llama_cpp.llama_sampler_accept(sampler, token)

    def _temperature(self, p: SamplingParams, with_xtc: bool = True) -> None:
        if with_xtc:
            self._xtc(p)
        if p.dynatemp_range > 0:
            self._add(llama_cpp.llama_sampler_init_temp_ext(
                float(p.temperature), float(p.dynatemp_range), float(p.dynatemp_exponent)))
        else:
            self._add(llama_cpp.llama_sampler_init_temp(float(p.temperature)))

    def _xtc(self, p: SamplingParams) -> None:
        if p.xtc_probability > 0 and not p.mirostat:
            self._add(llama_cpp.llama_sampler_init_xtc(float(p.xtc_probability), float(p.xtc_threshold),
                                                       1, self.seed))

    # ------------------------------------------------------------------ use
    def sample(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> int:
        applied = self._window.apply(ctx, batch_index) if self._window is not None else None
        try:
            if self._grammar is not None:
                token = self._grammar.sample(self._chain, ctx, batch_index)
            else:
                token = int(llama_cpp.llama_sampler_sample(self._chain, ctx, batch_index))
        finally:
            if applied is not None:  # twins and logprobs read the same row, unpenalised
                WindowPenalties.restore(applied)
        if self._window is not None:
            self._window.accept(token)
        if self.logprobs is not None:
            self.logprobs.append(token_logprob(ctx, batch_index, self._n_vocab, token,
                                               min(self.params.logprobs, MAX_LOGPROBS)))
        return token

    def accept(self, token: int) -> None:
        """Record a token the chain did not sample itself (e.g. replayed after preemption)."""
        llama_cpp.llama_sampler_accept(self._chain, token)
        if self._window is not None:
            self._window.accept(token)
        if self._grammar is not None:
            llama_cpp.llama_sampler_accept(self._grammar.sampler, token)

    def free(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            if self.params.grammar_retain_state:
                retain_grammar(self.params.grammar, self._grammar.sampler)
            else:
                llama_cpp.llama_sampler_free(self._grammar.sampler)
            self._grammar = None


_retained_lock = threading.Lock()
_retained: dict[str, llama_cpp.llama_sampler_p] = {}  # KoboldCpp keeps one: the last request's


def retain_grammar(grammar: str, sampler: llama_cpp.llama_sampler_p) -> None:
    """Keep a finished request's grammar state for the next ``grammar_retain_state`` request."""
    with _retained_lock:
        for old in _retained.values():
            llama_cpp.llama_sampler_free(old)
        _retained.clear()
        _retained[grammar] = sampler


def retained_grammar(grammar: str) -> llama_cpp.llama_sampler_p | None:
    """The kept state of this same grammar, taken (a request owns it until it finishes)."""
    with _retained_lock:
        return _retained.pop(grammar, None)


class GrammarCheck:
    """A grammar that costs one token's check per step instead of a pass over the vocabulary,
    and whose pass over the vocabulary stops at a CPU budget.

    Checking 262k candidates against a grammar takes 40-80 ms here, as long as a decode step.
    As llama.cpp's own common sampler does, the chain first samples without the grammar;
    only when the grammar rejects that token is the whole vocabulary filtered and the token
    drawn again. Either way the token obeys the grammar, and both the chain and the grammar
    record it once.

    llama.cpp follows every way a grammar can match a token's text, one character after the
    other, so an ambiguous grammar (``(([a-z])* [a-z])*``-like nested repeats) costs about 3x
    more per character of the token: measured on one such grammar, the 9-byte tokens took
    1 s, the 13-byte ones 60 s, and the whole vocabulary hours, all in one llama.cpp call
    that nothing can interrupt. That step stalled the decode thread and so every slot (the
    fuzz run's "no answer within 120 s"), until /health called the instance wedged. So the
    vocabulary is filtered in chunks, shortest tokens first, and the CPU spent is checked
    between chunks: the cost grows with the length, so the chunk that crosses the budget
    is a small one and the request ends with its 422 about a second later.
    """

    def __init__(self, sampler: llama_cpp.llama_sampler_p, n_vocab: int, by_length: TokenLengths) -> None:
        import numpy as np  # a llama-cpp-python dependency

        self.sampler = sampler
        self._np = np
        dtype = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        assert dtype.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._data = np.zeros(n_vocab, dtype=dtype)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._one = (llama_cpp.llama_token_data * 1)()
        self._n_vocab = n_vocab
        self._by_length = by_length
        self._sorted = np.zeros(n_vocab, dtype=dtype)  # the candidates shortest first, for _filter
        self._sorted["id"] = by_length.order

    def _candidates(self, ctx: llama_cpp.llama_context_p, batch_index: int) -> llama_cpp.llama_token_data_array:
        logits = llama_cpp.llama_get_logits_ith(ctx, batch_index)
        self._data["id"] = self._ids
        self._data["logit"] = self._np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        self._data["p"] = 0.0
        pointer = self._data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
        return llama_cpp.llama_token_data_array(data=pointer, size=self._n_vocab, selected=-1, sorted=False)

    def _allowed(self, token: int) -> bool:
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        one = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(one))
        return math.isfinite(self._one[0].logit)

    def _filter(self, started: float) -> None:
        """The grammar's verdict on every candidate (refused ones get -inf), shortest tokens
        first in chunks, within the CPU budget; the candidates stay in id order (a seeded draw
        depends on it)."""
        order = self._by_length.order
        rows = self._sorted
        rows["logit"] = self._data["logit"][order]
        base, size = rows.ctypes.data, ctypes.sizeof(llama_cpp.llama_token_data)
        for start in range(0, len(rows), GRAMMAR_FILTER_CHUNK):
            chunk = llama_cpp.llama_token_data_array(
                data=ctypes.cast(base + start * size, ctypes.POINTER(llama_cpp.llama_token_data)),
                size=min(GRAMMAR_FILTER_CHUNK, len(rows) - start), selected=-1, sorted=False)
            llama_cpp.llama_sampler_apply(self.sampler, ctypes.byref(chunk))
            _within_budget(time.thread_time() - started)
        self._data["logit"][order] = rows["logit"]

    def sample(self, chain: llama_cpp.llama_sampler_p, ctx: llama_cpp.llama_context_p, batch_index: int) -> int:
        """The next token, which the grammar allows; GrammarError when none is left or the
        grammar has grown too slow to check (llama.cpp would abort the process on accepting
        a token its grammar refuses, so that never happens)."""
        started = time.thread_time()  # this thread's CPU: a busy machine does not count against it
        cur = self._candidates(ctx, batch_index)
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
        token = int(cur.data[cur.selected].id)
        # One long token alone can cost seconds against an ambiguous grammar: those go through
        # the bounded filter, where tokens as long are reached only if the shorter ones were cheap.
        if self._by_length.bytes[token] > FAST_CHECK_MAX_BYTES or not self._allowed(token):
            cur = self._candidates(ctx, batch_index)
            self._filter(started)
            llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
            token = int(cur.data[cur.selected].id)
            if not self._allowed(token):
                raise GrammarError("the grammar allows no token here: it asks for text no token of this model "
                                   "can write, or the bans and biases removed every token it allows")
        llama_cpp.llama_sampler_accept(chain, token)
        llama_cpp.llama_sampler_accept(self.sampler, token)
        _within_budget(time.thread_time() - started)
        return token


def _within_budget(spent: float) -> None:
    if spent > GRAMMAR_STEP_BUDGET_S:
        raise GrammarError(f"the grammar is too ambiguous: checking one token against it took {spent:.1f} s "
                           f"of CPU (the limit is {GRAMMAR_STEP_BUDGET_S:.0f} s), as llama.cpp follows every "
                           "way it can match at once; make its alternatives start differently")


class TokenLengths(NamedTuple):
    """Each token's text length in bytes, and the token ids shortest first (GrammarCheck)."""

    bytes: Any  # numpy int32 array, by token id
    order: Any  # numpy int32 array of token ids


def tokens_by_length(vocab: Vocab) -> TokenLengths:
    """The vocabulary's token lengths, read once per model (~0.2 s for 262k tokens; the first
    grammar request pays it in the worker thread that builds its sampler)."""
    import numpy as np

    with _texts_lock:
        known = _lengths.get(id(vocab))
        if known is None:
            buf, pointer, to_piece = ctypes.create_string_buffer(256), vocab.pointer, llama_cpp.llama_token_to_piece
            sizes = np.fromiter((abs(to_piece(pointer, t, buf, 256, 0, True)) for t in range(vocab.n_tokens)),
                                dtype=np.int32, count=vocab.n_tokens)
            known = _lengths[id(vocab)] = TokenLengths(sizes, np.argsort(sizes, kind="stable").astype(np.int32))
        return known


PREFILTER = True  # bench/sampling_cost.py turns it off to measure what it saves
IN_PLACE = True  # likewise: False keeps the penalties in the chain (with the PREFILTER cut)
GRAMMAR_CHECK_FIRST = True  # likewise: False puts the grammar in the chain, before every sampler
# A grammar whose ways to match multiply as it goes (("a" | "a" "b")-like alternatives nested)
# makes each step slower; one step over this much CPU ends that request (a filter over the
# whole vocabulary normally costs 40-80 ms).
GRAMMAR_STEP_BUDGET_S = 1.0
GRAMMAR_FILTER_CHUNK = 2048  # candidates per llama.cpp call in a bounded filter (the budget is checked between)
FAST_CHECK_MAX_BYTES = 12  # drawn tokens longer than this skip the one-token check (GrammarCheck.sample)


def penalties_in_place(p: SamplingParams, order: Sequence[int], greedy: bool, window: int,
                       biases: Iterable[float]) -> bool:
    """Whether the penalties can go on the logit row before the chain (penalties.py) and give
    the same token as llama.cpp's penalties sampler in the chain.

    They must come first: before them in the chain there may only be bans (a ban is -inf
    either way; a finite bias first would change what the penalty divides) and stages that
    add no sampler. DRY keeps the in-chain path (it is applied after the penalties and needs
    the cut for both). With both a frequency and a presence penalty llama.cpp's
    ``count * f + p`` may be fused into one multiply-add, a rounding we cannot mirror.
    """
    if not IN_PLACE or window <= 0 or p.dry_multiplier > 0 or PENALTIES not in order:
        return False
    if p.rep_pen == 1.0 and not p.presence_penalty and not p.frequency_penalty:
        return False
    if p.presence_penalty and p.frequency_penalty:
        return False
    if any(bias != float("-inf") for bias in biases):
        return False
    return all(not _adds_sampler(stage, p, greedy) for stage in order[:order.index(PENALTIES)])


def _adds_sampler(stage: int, p: SamplingParams, greedy: bool) -> bool:
    """Whether a sampler_order stage puts a sampler in the chain (see SamplerChain._build)."""
    if greedy or p.mirostat:
        return False
    return ((stage == TOP_K and p.top_k > 0) or (stage == TYPICAL and 0.0 < p.typical < 1.0)
            or (stage == TOP_P and (0.0 < p.top_p < 1.0 or p.min_p > 0.0)) or stage == TEMPERATURE)


def prefilter_size(p: SamplingParams, after: Sequence[int], greedy: bool, window: int, n_ctx: int,
                   n_prompt: int) -> int:
    """How many of the best tokens surely contain every token the penalties + top-k (or greedy)
    can keep, so the penalty samplers need not walk the whole vocabulary (0 = do not cut).

    Penalties only lower logits (rep_pen >= 1, presence/frequency >= 0, DRY), and only of
    tokens in their windows (at most W of them). A token the next top-k keeps has fewer than
    k tokens above it after the penalties; before them, at most W more could have been above
    it. So the top k + W tokens before the penalties hold every survivor, with the same
    logits: the result is the same (ties aside), at a cost of k + W tokens instead of 262k.
    """
    if not PREFILTER or p.rep_pen < 1.0 or p.presence_penalty < 0 or p.frequency_penalty < 0:
        return 0
    lowered = window if (p.rep_pen != 1.0 or p.presence_penalty or p.frequency_penalty) else 0
    if p.dry_multiplier > 0:
        lowered += penalty_window(p.dry_penalty_last_n, n_ctx, n_prompt)
    if lowered == 0:
        return 0
    if greedy:
        keep = 1
    elif p.mirostat == 0 and p.top_k > 0 and after[:1] == [TOP_K]:
        keep = p.top_k
    else:
        return 0
    return keep + lowered


def penalty_window(range_: int, n_ctx: int, n_prompt: int) -> int:
    """Tokens a penalty looks back over: ``range_``, where 0 or -1 means the whole context."""
    if range_ > 0:
        return range_
    return max(n_ctx, n_prompt + 1, 64)


def token_logprob(ctx: llama_cpp.llama_context_p, batch_index: int, n_vocab: int, token: int,
                  top_n: int) -> TokenLogprob:
    """The model's log-probability of ``token`` (before samplers) and its ``top_n`` best rivals."""
    import numpy as np  # a llama-cpp-python dependency; only needed when logprobs are asked for

    ptr = llama_cpp.llama_get_logits_ith(ctx, batch_index)
    logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
    peak = float(logits.max())
    log_z = peak + math.log(float(np.exp(logits - peak).sum()))
    top: tuple[tuple[int, float], ...] = ()
    if top_n > 0:
        best = np.argpartition(-logits, top_n)[:top_n]
        best = best[np.argsort(-logits[best])]
        top = tuple((int(t), float(logits[t]) - log_z) for t in best)
    return TokenLogprob(token=token, logprob=float(logits[token]) - log_z, top=top)


_texts_lock = threading.Lock()
_texts: dict[int, list[str]] = {}
_longest: dict[int, int] = {}
_lengths: dict[int, TokenLengths] = {}


def longest_token_bytes(vocab: Vocab) -> int:
    """The most UTF-8 bytes one token stands for (special tokens as text included): a text of
    ``n`` bytes is at least ``n / longest`` tokens, so a hopeless prompt is known untokenized."""
    with _texts_lock:
        if id(vocab) not in _longest:
            buf, pointer, to_piece = ctypes.create_string_buffer(256), vocab.pointer, llama_cpp.llama_token_to_piece
            # The raw byte count, one reused buffer: ~4x faster than decoding each token's text
            # (n < 0: the piece needs -n bytes).
            _longest[id(vocab)] = max(abs(to_piece(pointer, t, buf, 256, 0, True)) for t in range(vocab.n_tokens))
        return max(_longest[id(vocab)], 1)


def tokens_containing(vocab: Vocab, needles: Sequence[str]) -> list[int]:
    """Token ids whose text contains any of ``needles`` (case-insensitive), as KoboldCpp bans
    ``banned_tokens``. The vocabulary's texts are read once per model and kept."""
    wanted = [n.lower() for n in needles if n]
    if not wanted:
        return []
    texts = token_texts(vocab)
    return [t for t, text in enumerate(texts) if text and any(w in text for w in wanted)]


def token_texts(vocab: Vocab) -> list[str]:
    """Every token's text, lower-cased, read once per model (~1 s for 262k tokens: the API
    calls this off the event loop before it submits a request with ``banned_tokens``)."""
    with _texts_lock:
        texts = _texts.get(id(vocab))
        if texts is None:
            buf = ctypes.create_string_buffer(256)
            texts = [vocab.piece(t, buf).decode("utf-8", "replace").lower() for t in range(vocab.n_tokens)]
            _texts[id(vocab)] = texts
        return texts

"""What one sampled token costs with KoboldCpp's default samplers, side by side in one run.

On Gemma's 262k vocabulary every sampler that walks all logits is expensive. The penalty
samplers walk the whole vocabulary unless the chain first cuts to the top k + W tokens
(engine/sampling.py ``prefilter_size``: provably the same result). This prints, on the same
logits and the same seeds:

  1. KoboldCpp defaults (rep_pen 1.1 over 320, top_k 100, top_p 0.92, temperature 0.7),
     with the cut (what the engine does) and without it;
  2. the same with greedy sampling;
  3. a penalty-free top-k/top-p chain (the cheapest sensible chain);

and checks that the cut changes no token. Then, decoding as it goes (grammar costs depend
on the text so far), the time to sample JSON under a JSON-schema grammar: checking the
sampled token first (what the engine does) against the grammar in the chain, where it
walks the whole vocabulary every step. Ratios are what to read: the absolute times depend
on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp

from koboldtui.engine import native, sampling
from koboldtui.engine.types import SamplingParams
from koboldtui.models.bundled import resolve_model_path

PROMPT = "In a small village by the sea, there lived an old fisherman who told stories. " * 12


def run(chain_params: SamplingParams, vocab: native.Vocab, ctx, prompt: list[int], idx: int, n: int,
        prefilter: bool) -> tuple[list[int], float]:
    sampling.PREFILTER = prefilter
    chain = sampling.SamplerChain(chain_params, vocab, False, prompt, 1024)
    try:
        tokens, times = [], []
        for _ in range(n):
            t = time.perf_counter()
            tokens.append(chain.sample(ctx, idx))
            times.append(time.perf_counter() - t)
        return tokens, statistics.median(times)
    finally:
        chain.free()
        sampling.PREFILTER = True


def grammar_rows(ctx, vocab: native.Vocab, n: int) -> None:
    from koboldtui.engine.json_grammar import json_schema_grammar

    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}}, "required": ["name", "age"]}
    params = SamplingParams(grammar=json_schema_grammar(schema), seed=1, rep_pen=1.0)
    batch = llama_cpp.llama_batch_init(64, 0, 1)

    def feed(tokens: list[int], pos: int) -> int:
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos + i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, 1 if i == len(tokens) - 1 else 0
        batch.n_tokens = len(tokens)
        assert llama_cpp.llama_decode(ctx, batch) == 0
        return len(tokens) - 1

    per_token = {}
    for check_first in (True, False):
        sampling.GRAMMAR_CHECK_FIRST = check_first
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        prompt = vocab.tokenize("Describe a person as JSON:")
        idx, pos = feed(prompt, 0), len(prompt)
        chain = sampling.SamplerChain(params, vocab, False, prompt, 1024)
        times, out = [], []
        for _ in range(n):
            t = time.perf_counter()
            token = chain.sample(ctx, idx)
            times.append(time.perf_counter() - t)
            if vocab.is_eog(token):
                break
            out.append(token)
            idx, pos = feed([token], pos), pos + 1
        chain.free()
        per_token[check_first] = statistics.median(times)
        label = "check sampled token first" if check_first else "grammar in the chain     "
        print(f"JSON schema, {label}: {per_token[check_first] * 1e3:7.2f} ms per token, "
              f"{len(out)} tokens: {vocab.detokenize(out)!r:.50}")
    sampling.GRAMMAR_CHECK_FIRST = True
    print(f"grammar in the chain / check first: x{per_token[False] / per_token[True]:.1f}")
    llama_cpp.llama_batch_free(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("-n", type=int, default=200, help="tokens sampled per chain")
    args = parser.parse_args()
    native.ensure_backend()
    model, _ = native.load_model(resolve_model_path(args.model), gpu_layers=0)
    ctx = native.create_context(model, n_ctx=1024, n_batch=512, n_ubatch=512, n_seq_max=1, threads=2)
    vocab = native.Vocab(model)
    prompt = vocab.tokenize(PROMPT)[:300]
    batch = llama_cpp.llama_batch_init(len(prompt), 0, 1)
    for i, tok in enumerate(prompt):
        batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
        batch.seq_id[i][0], batch.logits[i] = 0, 1 if i == len(prompt) - 1 else 0
    batch.n_tokens = len(prompt)
    assert llama_cpp.llama_decode(ctx, batch) == 0
    idx = len(prompt) - 1
    kobold = SamplingParams(seed=7)
    greedy = SamplingParams(temperature=0.0, seed=7)
    bare = SamplingParams(rep_pen=1.0, seed=7)
    print(f"vocabulary {vocab.n_tokens} tokens, {len(prompt)} prompt tokens in the penalty window, "
          f"{args.n} samples per chain (median time per token)")
    rows = {}
    for name, params in (("kobold defaults", kobold), ("greedy + rep_pen", greedy)):
        cut_tokens, cut_t = run(params, vocab, ctx, prompt, idx, args.n, True)
        full_tokens, full_t = run(params, vocab, ctx, prompt, idx, args.n, False)
        same = "identical" if cut_tokens == full_tokens else "DIFFERENT"
        rows[name] = (cut_t, full_t)
        print(f"{name:18s} with cut {cut_t * 1e3:7.3f} ms   without {full_t * 1e3:7.3f} ms   "
              f"saving x{full_t / cut_t:5.2f}   tokens {same}")
    _, bare_t = run(bare, vocab, ctx, prompt, idx, args.n, True)
    print(f"{'no penalties':18s}          {bare_t * 1e3:7.3f} ms")
    cut_t, full_t = rows["kobold defaults"]
    print(f"kobold defaults / penalty-free chain: with cut {cut_t / bare_t:.2f}, without {full_t / bare_t:.2f}")
    llama_cpp.llama_batch_free(batch)
    grammar_rows(ctx, vocab, args.n // 4)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()

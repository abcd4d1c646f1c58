"""What one sampled token costs with KoboldCpp's default samplers, side by side in one run.

On Gemma's 262k vocabulary every sampler that walks all logits is expensive. llama.cpp's
penalties sampler walks the whole vocabulary; the engine applies the penalties to the
window's tokens on the logit row instead (engine/penalties.py), or, where that cannot give
the same token, cuts to the top k + W tokens first (engine/sampling.py ``prefilter_size``).
This prints, on the same logits and the same seeds:

  1. KoboldCpp defaults (rep_pen 1.1 over 320, top_k 100, top_p 0.92, temperature 0.7),
     in place (what the engine does), with the cut, and over the whole vocabulary;
  2. the same with greedy sampling;
  3. a penalty-free top-k/top-p chain (the cheapest sensible chain);

and checks that the cut changes no token. Then, decoding as it goes (grammar costs depend
on the text so far), the time to sample JSON under a JSON-schema grammar: checking the
sampled token first (what the engine does) against the grammar in the chain, where it
walks the whole vocabulary every step. Ratios are what to read: the absolute times depend
on the machine and its load.

``--part throughput`` (also in the default ``all``) measures issue 9's target where it
counts, aggregate generated tok/s of 8 concurrent sequences, in interleaved rounds:

  a. a bare ``llama_decode`` loop sampling with a penalty-free top-k/top-p chain;
  b. the engine (LlamaEngine, in-process, no HTTP) with KoboldCpp's default samplers;
  c. the engine, greedy (temperature 0, no penalty);
  d. b as it was before the penalties went on the logit row (in the chain, after the cut);

and prints the medians and the ratios b/a (target >= 0.9) and c/a. Only the generation
phase is timed (after every sequence's first token), so the engine's prompt cache and the
raw loop's prompt pass do not enter the ratio.
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


MODES = {"in place": (True, True), "cut": (False, True), "whole vocab": (False, False)}  # (IN_PLACE, PREFILTER)


def run(chain_params: SamplingParams, vocab: native.Vocab, ctx, prompt: list[int], idx: int, n: int,
        mode: str = "in place") -> tuple[list[int], float]:
    sampling.IN_PLACE, sampling.PREFILTER = MODES[mode]
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
        sampling.IN_PLACE = sampling.PREFILTER = True


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


THROUGHPUT_PROMPTS = [f"Story {i}: In a small village by the sea, there lived" for i in range(8)]


def raw_loop(model, vocab: native.Vocab, threads: int, n: int, n_seq: int, seed: int) -> float:
    """Aggregate tok/s of n_seq sequences in a bare llama_decode loop, penalty-free top-k/top-p chain."""
    ctx = native.create_context(model, n_ctx=1024 * n_seq, n_batch=512, n_ubatch=512, n_seq_max=n_seq,
                                threads=threads)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    chains = []
    for s in range(n_seq):
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        for sampler in (llama_cpp.llama_sampler_init_top_k(100), llama_cpp.llama_sampler_init_top_p(0.92, 1),
                        llama_cpp.llama_sampler_init_temp(0.7), llama_cpp.llama_sampler_init_dist(seed + s)):
            llama_cpp.llama_sampler_chain_add(chain, sampler)
        chains.append(chain)
    prompts = [vocab.tokenize(p) for p in THROUGHPUT_PROMPTS[:n_seq]]
    k = 0
    for s, toks in enumerate(prompts):
        for i, t in enumerate(toks):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = t, i, 1
            batch.seq_id[k][0], batch.logits[k] = s, int(i == len(toks) - 1)
            k += 1
    batch.n_tokens = k
    assert llama_cpp.llama_decode(ctx, batch) == 0
    idx = [sum(len(p) for p in prompts[: s + 1]) - 1 for s in range(n_seq)]
    pos = [len(p) for p in prompts]
    t0 = 0.0
    for step in range(n):
        last = [llama_cpp.llama_sampler_sample(chains[s], ctx, idx[s]) for s in range(n_seq)]
        if step == 0:
            t0 = time.perf_counter()  # every sequence has its first token: the generation phase starts
        if step == n - 1:
            break
        for s in range(n_seq):
            batch.token[s], batch.pos[s], batch.n_seq_id[s] = last[s], pos[s], 1
            batch.seq_id[s][0], batch.logits[s] = s, 1
            pos[s] += 1
        batch.n_tokens = n_seq
        assert llama_cpp.llama_decode(ctx, batch) == 0
        idx = list(range(n_seq))
    rate = n_seq * (n - 1) / (time.perf_counter() - t0)
    for chain in chains:
        llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    return rate


def engine_run(engine, params: SamplingParams, n: int, n_seq: int, round_: int) -> float:
    """Aggregate tok/s of n_seq concurrent engine requests, from the first tokens to the last."""
    import asyncio
    from dataclasses import replace

    from koboldtui.engine.types import GenerationRequest

    async def go():
        handles = [engine.submit(GenerationRequest(prompt=f"Round {round_}. {p}", max_tokens=n, ban_eos=True,
                                                   sampling=replace(params, seed=params.seed + s)))
                   for s, p in enumerate(THROUGHPUT_PROMPTS[:n_seq])]
        return await asyncio.gather(*(h.result() for h in handles))

    results = asyncio.run(go())
    assert all(r.completion_tokens == n for r in results), [r.finish_reason for r in results]
    start = max(r.first_token_at for r in results)
    return n_seq * (n - 1) / (max(r.finished_at for r in results) - start)


def throughput_rows(model_path: Path, threads: int, n: int, rounds: int) -> None:
    from koboldtui.engine.engine_config import EngineConfig
    from koboldtui.engine.llama_engine import LlamaEngine

    n_seq = 8
    engine = LlamaEngine(EngineConfig(model_path=model_path, ctx=1024, parallel=n_seq, threads=threads))
    model, _ = native.load_model(model_path, gpu_layers=0)
    vocab = native.Vocab(model)
    kobold, greedy = SamplingParams(seed=7), SamplingParams(temperature=0.0, rep_pen=1.0, seed=7)
    rows: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
    try:
        engine_run(engine, greedy, 8, n_seq, -1)  # warm-up
        for r in range(rounds):
            rows["a"].append(raw_loop(model, vocab, threads, n, n_seq, 7))
            rows["b"].append(engine_run(engine, kobold, n, n_seq, r))
            rows["c"].append(engine_run(engine, greedy, n, n_seq, r))
            sampling.IN_PLACE = False  # read when a request's chain is built
            try:
                rows["d"].append(engine_run(engine, kobold, n, n_seq, r))
            finally:
                sampling.IN_PLACE = True
            print(f"round {r + 1}: raw {rows['a'][-1]:6.1f}  engine kobold {rows['b'][-1]:6.1f}  "
                  f"engine greedy {rows['c'][-1]:6.1f}  engine kobold before {rows['d'][-1]:6.1f} tok/s")
    finally:
        engine.close()
        llama_cpp.llama_model_free(model)
    a, b, c, d = (statistics.median(rows[k]) for k in "abcd")
    print(f"\n{n_seq} concurrent sequences, {n} tokens each, {threads} threads, median of {rounds} rounds:")
    print("| run | aggregate tok/s |\n|---|---|")
    print(f"| a. bare llama_decode loop, top-k 100 / top-p 0.92 / temp 0.7, no penalties | {a:.1f} |")
    print(f"| b. engine, KoboldCpp defaults (rep_pen 1.1 over 320, top_k 100, top_p 0.92, temp 0.7) | {b:.1f} |")
    print(f"| c. engine, greedy | {c:.1f} |")
    print(f"| d. b with the penalties in the chain after a top-(k + W) cut (before) | {d:.1f} |")
    ratios_b = [rb / ra for ra, rb in zip(rows["a"], rows["b"], strict=True)]
    ratios_c = [rc / ra for ra, rc in zip(rows["a"], rows["c"], strict=True)]
    print(f"b/a = {b / a:.2f} (per round {', '.join(f'{x:.2f}' for x in ratios_b)}; target >= 0.9)")
    print(f"c/a = {c / a:.2f} (per round {', '.join(f'{x:.2f}' for x in ratios_c)})")
    ratios_d = [rd / ra for ra, rd in zip(rows["a"], rows["d"], strict=True)]
    print(f"d/a = {d / a:.2f} (per round {', '.join(f'{x:.2f}' for x in ratios_d)}; before)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("-n", type=int, default=200, help="tokens sampled per chain")
    parser.add_argument("--part", choices=("all", "per-token", "throughput"), default="all")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per sequence (throughput)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (throughput)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    native.ensure_backend()
    if args.part in ("all", "throughput"):
        throughput_rows(resolve_model_path(args.model), args.threads, args.tokens, args.rounds)
        if args.part == "throughput":
            return
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
        runs = {mode: run(params, vocab, ctx, prompt, idx, args.n, mode) for mode in MODES}
        same = "identical" if len({tuple(tokens) for tokens, _ in runs.values()}) == 1 else "DIFFERENT"
        rows[name] = {mode: t for mode, (_, t) in runs.items()}
        print(f"{name:18s} " + "   ".join(f"{mode} {t * 1e3:6.3f} ms" for mode, t in rows[name].items())
              + f"   tokens {same}")
    _, bare_t = run(bare, vocab, ctx, prompt, idx, args.n)
    print(f"{'no penalties':18s} {bare_t * 1e3:6.3f} ms")
    print("kobold defaults / penalty-free chain: "
          + ", ".join(f"{mode} {t / bare_t:.2f}" for mode, t in rows["kobold defaults"].items()))
    llama_cpp.llama_batch_free(batch)
    grammar_rows(ctx, vocab, args.n // 4)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


if __name__ == "__main__":
    main()

"""Throughput side by side, in one run, on the bundled model (or --model).

Prints aggregate generated tokens/s for:
  1. koboldtui over HTTP, one stream;
  2. koboldtui over HTTP, 8 concurrent requests (ban_eos_token, fixed length);
  3. the raw ceiling: the same 8 sequences decoded by a bare low-level llama_decode loop;
  4. the peer: llama-cpp-python's high-level ``Llama`` serving the 8 requests one at a time,
     as its bundled server does;
and time to first token of a short request, idle vs while 7 long ones generate.
Targets (2-core CPU): HTTP-8 >= 0.85 x raw ceiling, and >= 2 x the peer.
All runs use greedy sampling and the same thread count, and never overlap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koboldtui.config import physical_cores
from koboldtui.models.bundled import resolve_model_path

PROMPTS = [f"Story {i}: In a small village by the sea, there lived" for i in range(8)]


def start_server(model: Path, port: int, threads: int, parallel: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "koboldtui.cli", "serve", "--model", str(model),
                             "--port", str(port), "--ctx", "1024", "--parallel", str(parallel),
                             "--threads", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the instance did not start")


async def http_run(base: str, prompts: list[str], n: int) -> tuple[float, list[float]]:
    """Aggregate tokens/s of concurrent streaming requests, and each one's time to first token."""
    async def one(c: httpx.AsyncClient, prompt: str) -> tuple[int, float]:
        t0 = time.perf_counter()
        ttft = 0.0
        tokens = 0
        async with c.stream("POST", "/api/extra/generate/stream", json={
                "prompt": prompt, "max_length": n, "ban_eos_token": True, "temperature": 0,
                "rep_pen": 1.0}) as r:
            async for line in r.aiter_lines():
                if line.startswith("data:") and '"finish_reason": null' in line:
                    if not ttft:
                        ttft = time.perf_counter() - t0
        body = (await c.post("/api/extra/perf")).json() if False else None
        del body
        return n, ttft

    async with httpx.AsyncClient(base_url=base, timeout=300) as c:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(c, p) for p in prompts))
        wall = time.perf_counter() - t0
    return sum(k for k, _ in results) / wall, [t for _, t in results]


async def ttft_under_load(base: str) -> tuple[float, float, int]:
    """TTFT of a short request when idle, and while 7 long requests generate."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as c:
        async def short() -> float:
            t0 = time.perf_counter()
            async with c.stream("POST", "/api/extra/generate/stream", json={
                    "prompt": "Hello there", "max_length": 4, "temperature": 0}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        return time.perf_counter() - t0
            return time.perf_counter() - t0

        async def interrupts() -> int:
            return (await c.get("/api/koboldtui/status")).json()["totals"]["interrupted_steps"]

        idle = statistics.median([await short() for _ in range(5)])
        longs = [asyncio.create_task(c.post("/api/v1/generate", json={
            "prompt": p, "max_length": 300, "ban_eos_token": True, "temperature": 0})) for p in PROMPTS[:7]]
        await asyncio.sleep(1.0)  # the long ones are generating now
        before = await interrupts()
        loaded = []
        for _ in range(5):
            loaded.append(await short())
            await asyncio.sleep(0.05)
        cut = await interrupts() - before
        for task in longs:
            await task
    return idle, statistics.median(loaded), cut


def raw_ceiling(model: Path, threads: int, n: int, n_seq: int) -> float:
    """n_seq sequences decoded together by a bare llama_decode loop: no server, no asyncio."""
    import llama_cpp

    from koboldtui.engine import native

    m, _ = native.load_model(model, gpu_layers=0)
    ctx = native.create_context(m, n_ctx=1024 * n_seq, n_batch=512, n_ubatch=512, n_seq_max=n_seq, threads=threads)
    vocab = native.Vocab(m)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    chains = []
    for _ in range(n_seq):
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        chains.append(chain)
    prompts = [vocab.tokenize(p) for p in PROMPTS[:n_seq]]
    t0 = time.perf_counter()
    k = 0
    for s, toks in enumerate(prompts):
        for i, t in enumerate(toks):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = t, i, 1
            batch.seq_id[k][0] = s
            batch.logits[k] = int(i == len(toks) - 1)
            k += 1
    batch.n_tokens = k
    assert llama_cpp.llama_decode(ctx, batch) == 0
    idx = [sum(len(p) for p in prompts[: s + 1]) - 1 for s in range(n_seq)]
    pos = [len(p) for p in prompts]
    generated = 0
    for _ in range(n):
        last = [llama_cpp.llama_sampler_sample(chains[s], ctx, idx[s]) for s in range(n_seq)]
        generated += n_seq
        for s in range(n_seq):
            batch.token[s], batch.pos[s], batch.n_seq_id[s] = last[s], pos[s], 1
            batch.seq_id[s][0] = s
            batch.logits[s] = 1
            pos[s] += 1
        batch.n_tokens = n_seq
        assert llama_cpp.llama_decode(ctx, batch) == 0
        idx = list(range(n_seq))
    rate = generated / (time.perf_counter() - t0)
    for chain in chains:
        llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(m)
    return rate


def peer_one_at_a_time(model: Path, threads: int, n: int, n_req: int) -> float:
    """llama-cpp-python's Llama serving n_req requests the usual way: one after another."""
    import llama_cpp

    from koboldtui.engine.native import choose_repack

    repack = choose_repack()
    original = llama_cpp.llama_cpp.llama_model_default_params

    def safe_defaults():  # ENGINE.md way 2: the AMX-safe switch for the high-level class
        params = original()
        params.use_extra_bufts = repack.use_extra_bufts
        return params

    llama_cpp.llama_cpp.llama_model_default_params = safe_defaults
    llama_cpp.llama_model_default_params = safe_defaults
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=1024, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    t0 = time.perf_counter()
    generated = 0
    for prompt in PROMPTS[:n_req]:
        out = llm.create_completion(prompt, max_tokens=n, temperature=0.0, repeat_penalty=1.0,
                                    logit_bias={tok: -1e9 for tok in (1, 106, 212)})
        generated += out["usage"]["completion_tokens"]
    rate = generated / (time.perf_counter() - t0)
    llm.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()
    model = resolve_model_path(args.model)
    os.environ.setdefault("KOBOLDTUI_LLAMA_VERBOSE", "0")
    print(f"model {model.name}, {args.threads} threads, {args.tokens} tokens per request\n")

    proc = start_server(model, args.port, args.threads, parallel=8)
    base = f"http://127.0.0.1:{args.port}"
    try:
        asyncio.run(http_run(base, PROMPTS[:2], 8))  # warm-up
        single, _ = asyncio.run(http_run(base, PROMPTS[:1], args.tokens))
        multi, _ = asyncio.run(http_run(base, PROMPTS, args.tokens))
        idle_ttft, loaded_ttft, cut = asyncio.run(ttft_under_load(base))
    finally:
        proc.terminate()
        proc.wait(30)
    raw = raw_ceiling(model, args.threads, args.tokens, 8)
    peer = peer_one_at_a_time(model, args.threads, args.tokens, 8)

    print("| run | aggregate tok/s |")
    print("|---|---|")
    print(f"| koboldtui HTTP, 1 stream | {single:.1f} |")
    print(f"| koboldtui HTTP, 8 concurrent | {multi:.1f} |")
    print(f"| raw llama_decode loop, 8 sequences | {raw:.1f} |")
    print(f"| llama-cpp-python Llama, 8 requests one at a time | {peer:.1f} |")
    print()
    print(f"HTTP-8 / raw ceiling = {multi / raw:.2f}  (target >= 0.85)")
    print(f"HTTP-8 / peer        = {multi / peer:.2f}  (target >= 2)")
    print(f"TTFT idle {idle_ttft * 1000:.0f} ms, with 7 long requests generating {loaded_ttft * 1000:.0f} ms "
          f"= {loaded_ttft / idle_ttft:.2f}x (target <= 2x); {cut} decode steps were cut short for them")


if __name__ == "__main__":
    main()

"""Slots that remember, measured side by side in one run (issue 9's benchmarks).

Prints, for koboldtui and (with ``--llama-server PATH``) llama.cpp's own ``llama-server``
on the same GGUF, threads and slots:
  1. time to first token of a warm chat turn (a ~1,500-token history resent with one new
     line) against a short prompt's: target <= 2x, and <= llama-server's warm TTFT;
  2. a 30-turn chat (a ~700-token log, then one short question per turn) that outgrows
     a 1,024-token context (its own instance, --ctx 1024: the engine cuts and shifts):
     every turn's TTFT after the cold first one <= 3x a short prompt's (koboldtui only:
     llama-server refuses prompts beyond its context);
  3. 4 sequences in gapped slots (0,2,4,6) / contiguous slots (0,1,2,3), a bare
     llama_decode loop with the engine's context settings: target >= 0.9;
  4. 8-concurrent aggregate tok/s, koboldtui / llama-server: target >= 1.0 (both servers
     stay up; rounds alternate between them and the medians are compared).
Measurements never overlap. Like for like: build llama-server from the llama.cpp that
llama-cpp-python 0.3.36 vendors with the same CMake flags as the wheel (the default,
GGML_NATIVE=ON; see the README), and by default it gets ``--no-repack`` wherever koboldtui
turns weight repacking off (AMX CPUs). Without --llama-server that column is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koboldtui.config import physical_cores
from koboldtui.models.bundled import resolve_model_path

PARAGRAPH = ("Entry {i}. The tide came in early today and the keeper wrote it down: wind from the "
             "north-west, a grey sky, two fishing boats at noon and a cargo ship at four. ")
LONG_PROMPTS = [f"Story {i}: In a small village by the sea, there lived" for i in range(8)]


class Server:
    """One HTTP server under test: how to start it and how to ask it for a completion."""

    def __init__(self, name: str, argv: list[str], port: int, kind: str) -> None:
        self.name, self.argv, self.port, self.kind = name, argv, port, kind
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise SystemExit(f"{self.name} did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(30)

    def body(self, prompt: str, n: int, stream: bool, max_context: int | None = None) -> tuple[str, dict]:
        if self.kind == "koboldtui":
            body = {"prompt": prompt, "max_length": n, "temperature": 0, "rep_pen": 1.0,
                    "ban_eos_token": True}
            if max_context:
                body["max_context_length"] = max_context
            return ("/api/extra/generate/stream" if stream else "/api/v1/generate"), body
        return "/completion", {"prompt": prompt, "n_predict": n, "temperature": 0, "ignore_eos": True,
                               "stream": stream, "cache_prompt": True}

    async def ttft(self, c: httpx.AsyncClient, prompt: str, n: int = 8,
                   max_context: int | None = None) -> tuple[float, str]:
        """Seconds to the first streamed token, and the whole text."""
        path, body = self.body(prompt, n, True, max_context)
        t0 = time.perf_counter()
        first = 0.0
        text = []
        async with c.stream("POST", path, json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = json.loads(line[5:])
                piece = data.get("token") if self.kind == "koboldtui" else data.get("content")
                if piece:
                    first = first or time.perf_counter() - t0
                    text.append(piece)
        return first or time.perf_counter() - t0, "".join(text)

    async def generate(self, c: httpx.AsyncClient, prompt: str, n: int) -> None:
        path, body = self.body(prompt, n, False)
        (await c.post(path, json=body)).raise_for_status()


async def short_ttft(server: Server, c: httpx.AsyncClient) -> float:
    return statistics.median([(await server.ttft(c, f"Hello number {i}!", 4))[0] for i in range(5)])


async def warm_turns(server: Server, c: httpx.AsyncClient, entries: int) -> tuple[float, float]:
    """TTFT of the first (cold) turn of a long chat, and the median of the next warm turns."""
    history = "".join(PARAGRAPH.format(i=i) for i in range(entries))
    cold, answer = await server.ttft(c, history, 16)
    warm = []
    for turn in range(5):
        history += answer + f"\nQuestion {turn}: what happened next?\nAnswer:"
        t, answer = await server.ttft(c, history, 16)
        warm.append(t)
    return cold, statistics.median(warm)


async def long_chat(server: Server, c: httpx.AsyncClient, turns: int = 30,
                    detail: list[dict[str, float]] | None = None) -> list[float]:
    """A user typing one short line per turn after a long log: it outgrows 1,024 tokens
    by turn ~8, and every later turn is cut (and shifted). With ``detail`` each turn's
    prompt tokens, new (uncached) tokens and context shifts are appended to it."""
    history = "[A log kept by a lighthouse keeper.]\n" + "".join(PARAGRAPH.format(i=i) for i in range(20))
    times = []
    totals = (await c.get("/api/koboldtui/status")).json()["totals"] if detail is not None else {}
    for turn in range(turns):
        history += f"\nQuestion {turn}: what happened next?\nAnswer:"
        t, answer = await server.ttft(c, history, 24, max_context=1024)
        history += answer + "\n"
        times.append(t)
        if detail is not None:
            now = (await c.get("/api/koboldtui/status")).json()["totals"]
            prompt = now["prompt_tokens"] - totals["prompt_tokens"]
            detail.append({"ttft": t, "prompt": prompt,
                           "new": prompt - (now["prompt_tokens_cached"] - totals["prompt_tokens_cached"]),
                           "shifts": now["context_shifts"] - totals["context_shifts"]})
            totals = now
    return times


async def concurrent_rate(server: Server, c: httpx.AsyncClient, n: int) -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(server.generate(c, p, n) for p in LONG_PROMPTS))
    return n * len(LONG_PROMPTS) / (time.perf_counter() - t0)


def client(server: Server) -> httpx.AsyncClient:
    # A fresh connection per request: llama-server drops idle keep-alive connections, which
    # httpx would otherwise reuse and fail on.
    return httpx.AsyncClient(base_url=server.base, timeout=600,
                             limits=httpx.Limits(max_keepalive_connections=0))


async def measure(server: Server) -> dict[str, object]:
    async with client(server) as c:
        await server.ttft(c, "Warm-up", 4)
        out: dict[str, object] = {"short": await short_ttft(server, c)}
        out["cold"], out["warm"] = await warm_turns(server, c, 40)
    return out


async def one_rate(server: Server, tokens: int) -> float:
    async with client(server) as c:
        return await concurrent_rate(server, c, tokens)


def alternating_rates(servers: list[Server], tokens: int, rounds: int) -> dict[str, float]:
    """Median 8-concurrent tok/s of each server over ``rounds`` rounds taken in turn (A, B, A,
    B, ...), so a burst of load on a shared machine hits both alike."""
    rates: dict[str, list[float]] = {server.name: [] for server in servers}
    for _ in range(rounds):
        for server in servers:
            rates[server.name].append(asyncio.run(one_rate(server, tokens)))
    for name, got in rates.items():
        print(f"8-concurrent tok/s, {name}, per round: {', '.join(f'{r:.1f}' for r in got)}")
    return {name: statistics.median(got) for name, got in rates.items()}


async def measure_chat(server: Server, detail: list[dict[str, float]] | None = None) -> dict[str, object]:
    async with client(server) as c:
        await server.ttft(c, "Warm-up", 4)
        out: dict[str, object] = {"short": await short_ttft(server, c)}
        out["chat"] = await long_chat(server, c, detail=detail)
        out["status"] = (await c.get("/api/koboldtui/status")).json()["totals"]
    return out


def chat_only(model: Path, port: int, threads: int, repeat: int) -> None:
    """``--part chat``: only the 30-turn chat, ``repeat`` times on fresh instances, with each
    turn's TTFT / short-prompt TTFT, prompt tokens, new (uncached) tokens and shifts."""
    worst = []
    for run in range(repeat):
        detail: list[dict[str, float]] = []
        with koboldtui_server(model, port + 2, 1024, 2, threads) as chat_server:
            kc = asyncio.run(measure_chat(chat_server, detail))
        short = float(kc["short"])  # type: ignore[arg-type]
        print(f"run {run + 1}: short prompt TTFT {short * 1000:.0f} ms")
        print("| turn | TTFT ms | / short | prompt tokens | new tokens | shifted |\n|---|---|---|---|---|---|")
        for turn, row in enumerate(detail, 1):
            print(f"| {turn} | {row['ttft'] * 1000:.0f} | {row['ttft'] / short:.2f} | {row['prompt']:.0f} | "
                  f"{row['new']:.0f} | {'yes' if row['shifts'] else ''} |")
        rest = detail[1:]
        ratios = [row["ttft"] / short for row in rest]
        shifted = [row["ttft"] / short for row in rest if row["shifts"]]
        plain = [row["ttft"] / short for row in rest if not row["shifts"]]
        worst.append(max(ratios))
        print(f"turns 2-{len(detail)}: worst / short {max(ratios):.2f}, median {statistics.median(ratios):.2f}; "
              f"shift turns ({len(shifted)}) median {statistics.median(shifted) if shifted else 0:.2f}, "
              f"other turns ({len(plain)}) median {statistics.median(plain) if plain else 0:.2f}\n")
    print(f"worst turn / short over {repeat} runs: {', '.join(f'{w:.2f}' for w in worst)}  (target <= 3)")


def koboldtui_server(model: Path, port: int, ctx: int, parallel: int, threads: int) -> Server:
    return Server("koboldtui", [sys.executable, "-m", "koboldtui.cli", "serve", "--model", str(model),
                                "--port", str(port), "--ctx", str(ctx), "--parallel", str(parallel),
                                "--threads", str(threads)], port, "koboldtui")


def gap_ratio(model: Path, threads: int, steps: int = 48) -> tuple[float, float, float]:
    """tok/s of 4 sequences at seq ids 0,2,4,6 vs 0,1,2,3 (the engine's context settings),
    and the gapped rate with a unified KV cache for comparison."""
    import llama_cpp

    from koboldtui.engine import native

    model_p, _ = native.load_model(model, gpu_layers=0)

    def run(ids: list[int], unified: bool) -> float:
        ctx = native.create_context(model_p, n_ctx=1024 * 8, n_batch=512, n_ubatch=512, n_seq_max=8,
                                    threads=threads)
        if unified:
            llama_cpp.llama_free(ctx)
            params = llama_cpp.llama_context_default_params()
            params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 1024 * 8, 512, 512, 8
            params.n_threads = params.n_threads_batch = threads
            params.kv_unified, params.n_outputs_max, params.swa_full = True, 8, False
            ctx = llama_cpp.llama_init_from_model(model_p, params)
        batch = llama_cpp.llama_batch_init(512, 0, 1)
        tok = native.Vocab(model_p).tokenize("Once upon a time")
        k = 0
        for s in ids:
            for i, t in enumerate(tok):
                batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = t, i, 1, 0
                batch.seq_id[k][0] = s
                k += 1
        batch.n_tokens = k
        assert llama_cpp.llama_decode(ctx, batch) == 0
        t0 = time.perf_counter()
        for step in range(steps):
            for j, s in enumerate(ids):
                batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = 100 + j, len(tok) + step, 1, 1
                batch.seq_id[j][0] = s
            batch.n_tokens = len(ids)
            assert llama_cpp.llama_decode(ctx, batch) == 0
        rate = steps * len(ids) / (time.perf_counter() - t0)
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        return rate

    rates: dict[str, list[float]] = {"contiguous": [], "gapped": [], "unified": []}
    for _ in range(3):  # interleaved, so a burst of load on the machine hits all three alike
        rates["contiguous"].append(run([0, 1, 2, 3], False))
        rates["gapped"].append(run([0, 2, 4, 6], False))
        rates["unified"].append(run([0, 2, 4, 6], True))
    contiguous, gapped, unified = (statistics.median(rates[k]) for k in ("contiguous", "gapped", "unified"))
    llama_cpp.llama_model_free(model_p)
    return gapped, contiguous, unified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--tokens", type=int, default=48, help="tokens per request in the 8-concurrent run")
    parser.add_argument("--threads", type=int, default=physical_cores())
    parser.add_argument("--llama-server", default=None, help="path of a llama-server binary (optional)")
    parser.add_argument("--port", type=int, default=5097)
    parser.add_argument("--part", choices=("all", "chat"), default="all",
                        help="'chat': only the 30-turn chat (koboldtui only), turn by turn")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the chat with --part chat")
    parser.add_argument("--rounds", type=int, default=3,
                        help="8-concurrent rounds per server, taken in turn (median reported)")
    parser.add_argument("--peer-repack", choices=("same", "on", "off"), default="same",
                        help="llama-server's weight repacking: 'same' as koboldtui chooses on this CPU "
                             "(like for like; --no-repack where koboldtui has it off), or forced")
    args = parser.parse_args()
    model = resolve_model_path(args.model)
    os.environ.setdefault("KOBOLDTUI_LLAMA_VERBOSE", "0")
    if args.part == "chat":
        chat_only(model, args.port, args.threads, args.repeat)
        return
    ctx, parallel = 2048, 8
    print(f"model {model.name}, {args.threads} threads, --ctx {ctx} per slot, {parallel} slots\n")
    from koboldtui.engine.native import choose_repack

    repack = choose_repack()  # what the koboldtui child will choose on this CPU
    peer_repack = repack.use_extra_bufts if args.peer_repack == "same" else args.peer_repack == "on"
    print(f"koboldtui weight repacking: {'on' if repack.use_extra_bufts else 'off'} ({repack.reason}); "
          f"llama-server: {'on' if peer_repack else 'off (--no-repack)'}\n")

    peer = None
    with contextlib.ExitStack() as stack:
        ours = stack.enter_context(koboldtui_server(model, args.port, ctx, parallel, args.threads))
        k = asyncio.run(measure(ours))
        servers = [ours]
        if args.llama_server and Path(args.llama_server).exists():
            argv = [args.llama_server, "-m", str(model), "--port", str(args.port + 1), "-c", str(ctx * parallel),
                    "-np", str(parallel), "-t", str(args.threads), "-tb", str(args.threads), "-b", "512",
                    "-ub", "512"] + ([] if peer_repack else ["--no-repack"])
            try:
                theirs = stack.enter_context(Server("llama-server", argv, args.port + 1, "llama-server"))
                peer = asyncio.run(measure(theirs))
                servers.append(theirs)
            except (httpx.HTTPError, SystemExit) as exc:
                print(f"llama-server run failed, its column is skipped: {exc!r}")
        rates = alternating_rates(servers, args.tokens, args.rounds)
        k["rate8"] = rates["koboldtui"]
        if peer is not None:
            peer["rate8"] = rates["llama-server"]
    with koboldtui_server(model, args.port + 2, 1024, 2, args.threads) as chat_server:
        kc = asyncio.run(measure_chat(chat_server))
    gapped, contiguous, unified = gap_ratio(model, args.threads)

    def ms(x: object) -> str:
        return f"{float(x) * 1000:.0f} ms"  # type: ignore[arg-type]

    print("| | koboldtui | llama-server |")
    print("|---|---|---|")
    for key, label in (("short", "short prompt TTFT"), ("cold", "first turn TTFT (~1,600 tokens, cold)"),
                       ("warm", "next turn TTFT (warm, median of 5)")):
        print(f"| {label} | {ms(k[key])} | {ms(peer[key]) if peer else '-'} |")
    print(f"| 8 concurrent, aggregate tok/s (median of {args.rounds}) | {float(k['rate8']):.1f} | "
          f"{format(float(peer['rate8']), '.1f') if peer else '-'} |")
    print()
    warm_ratio = float(k["warm"]) / float(k["short"])  # type: ignore[arg-type]
    print(f"warm turn / short prompt TTFT = {warm_ratio:.2f}  (target <= 2)")
    if peer:
        print(f"warm turn TTFT koboldtui / llama-server = {float(k['warm']) / float(peer['warm']):.2f}  (target <= 1)")
        print(f"8-concurrent tok/s koboldtui / llama-server = {float(k['rate8']) / float(peer['rate8']):.2f}  "
              "(target >= 1.0)")
    chat = kc["chat"]
    assert isinstance(chat, list)
    short = float(kc["short"])  # type: ignore[arg-type]
    print(f"30-turn chat beyond --ctx 1024 (its own instance, 2 slots): short prompt TTFT {ms(short)}, "
          f"worst turn TTFT {ms(max(chat))}, median {ms(statistics.median(chat))}; worst / short = "
          f"{max(chat) / short:.2f}, worst of turns 2-30 / short = {max(chat[1:]) / short:.2f}  (target <= 3)")
    totals = kc["status"]
    assert isinstance(totals, dict)
    print(f"koboldtui totals: prompt_tokens {totals['prompt_tokens']}, cached {totals.get('prompt_tokens_cached')}, "
          f"context_shifts {totals.get('context_shifts')}")
    print(f"4 sequences gapped (0,2,4,6) / contiguous (0,1,2,3) = {gapped / contiguous:.2f}  (target >= 0.9); "
          f"unified KV, gapped / split contiguous = {unified / contiguous:.2f}")


if __name__ == "__main__":
    main()

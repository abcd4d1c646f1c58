"""The gateway measured side by side in one run (issue 17), printed as ratios.

1. overhead: N concurrent streams through the gateway vs straight to the instance
   (rounds alternate): aggregate tok/s ratio (target >= 0.97) and median TTFT added
   (target <= 5 ms);
2. affinity: 2 instances of the bundled model in one pool; U chat users each resend their
   growing history for T turns, through a gateway routing by prefix affinity and through
   one routing round robin over the same two instances: share of prompt tokens served
   from the slots' cache (target >= 85 %) and median turn TTFT, round robin / affinity
   (target >= 1.8);
3. on demand: the first request to a stopped instance through the gateway returns text
   within its load time + 1 s (load time measured with `koboldtui start` just before).

Everything is real: `koboldtui serve` children started by the supervisor, `koboldtui
gateway` processes, HTTP on 127.0.0.1, in a throwaway KOBOLDTUI_HOME. Sizes are flags so a
small machine can run a smaller version (say which in the README).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koboldtui.control.spec import InstanceSpec  # noqa: E402
from koboldtui.control.supervisor import Supervisor  # noqa: E402
from koboldtui.models.bundled import resolve_model_path  # noqa: E402
from koboldtui.paths import HOME_ENV, app_paths  # noqa: E402
from koboldtui.store.db import open_database  # noqa: E402
from koboldtui.store.instances import InstanceStore  # noqa: E402

TOPICS = ["a lighthouse keeper", "a baker in Lyon", "a lost robot", "two rival chess players",
          "a river barge", "a mountain village", "a night train", "an old library", "a comet",
          "a violin maker", "a desert caravan", "a submarine crew", "a garden in winter",
          "a clockmaker's apprentice", "a fox and a crow", "a ship's cat"]


class Gw:
    """A `koboldtui gateway` process."""

    def __init__(self, port: int, env: dict[str, str], balance: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "koboldtui.cli", "gateway", "--port", str(port),
                                      "--balance", balance, "--wait", "300"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                models = httpx.get(self.base + "/v1/models", timeout=2).json()["data"]
                if models:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise RuntimeError("the gateway did not start")

    def wait_ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {m["id"]: m["state"] for m in httpx.get(self.base + "/v1/models").json()["data"]}
            if all(states.get(n) == "ready" for n in names):
                return
            time.sleep(0.3)
        raise RuntimeError(f"the gateway never saw {names} ready")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def stream(c: httpx.AsyncClient, base: str, body: dict) -> tuple[float, int, str]:
    """(TTFT s, tokens, text) of one streamed chat or completion."""
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    t0, first, tokens, text = time.perf_counter(), None, 0, []
    async with c.stream("POST", base + path, json={**body, "stream": True}) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                first = first or time.perf_counter()
                tokens += 1
                text.append(piece)
    return (first or time.perf_counter()) - t0, tokens, "".join(text)


async def concurrent(base: str, model: str, n: int, tokens: int) -> tuple[float, float]:
    """(aggregate tok/s, median TTFT s) of n concurrent completions."""
    async with httpx.AsyncClient(timeout=600) as c:
        t0 = time.perf_counter()
        runs = await asyncio.gather(*(stream(c, base, {
            "model": model, "prompt": f"Story {i}: In a small village by the sea, there lived",
            "max_tokens": tokens, "temperature": 0}) for i in range(n)))
        wall = time.perf_counter() - t0
    return sum(r[1] for r in runs) / wall, statistics.median(r[0] for r in runs)


def overhead(gw: Gw, direct: str, n: int, tokens: int, rounds: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {"gateway": [], "direct": []}
    ttfts: dict[str, list[float]] = {"gateway": [], "direct": []}
    asyncio.run(concurrent(direct, "solo", n, 4))  # warm
    for _ in range(rounds):
        for label, base in (("direct", direct), ("gateway", gw.base)):
            rate, ttft = asyncio.run(concurrent(base, "solo", n, tokens))
            rates[label].append(rate)
            ttfts[label].append(ttft)
    single: dict[str, list[float]] = {"gateway": [], "direct": []}  # one request at a time: the hop alone
    for i in range(rounds * 6):
        for label, base in (("direct", direct), ("gateway", gw.base)):
            single[label].append(asyncio.run(concurrent(base, "solo", 1, 2))[1])
    return {"single_ttft_added_ms": (statistics.median(single["gateway"]) - statistics.median(single["direct"])) * 1000,
            "tok_s_ratio": statistics.median(rates["gateway"]) / statistics.median(rates["direct"]),
            "ttft_added_ms": (statistics.median(ttfts["gateway"]) - statistics.median(ttfts["direct"])) * 1000,
            "direct_tok_s": statistics.median(rates["direct"]), "gateway_tok_s": statistics.median(rates["gateway"])}


def cache_counters(bases: list[str]) -> tuple[float, float]:
    prompt = cached = 0.0
    for base in bases:
        for line in httpx.get(base + "/metrics").text.splitlines():
            if line.startswith("koboldtui_prompt_tokens_total "):
                prompt += float(line.split()[1])
            elif line.startswith("koboldtui_prompt_tokens_cached_total "):
                cached += float(line.split()[1])
    return prompt, cached


async def chats(base: str, users: int, turns: int, tokens: int, salt: str, raw: bool = False) -> list[float]:
    """Each user resends its growing history every turn; the turn TTFTs (the first turn's left out)."""
    ttfts: list[float] = []

    async def user(c: httpx.AsyncClient, u: int) -> None:
        history = [{"role": "system", "content": f"[{salt} {u}] You are a storyteller. " * 6},
                   {"role": "user", "content": f"Tell me about {TOPICS[u % len(TOPICS)]}."}]
        # raw: the same chat as a plain transcript on /v1/completions, each user's text distinct
        # from its first token (a chat template's fixed opening is shared by every chat)
        transcript = f"{TOPICS[u % len(TOPICS)].split()[-1].capitalize()} {salt} {u}: a story. " * 6
        for turn in range(turns):
            body = ({"prompt": transcript + "\nStoryteller:"} if raw else {"messages": history})
            ttft, _, text = await stream(c, base, {"model": "pool", "max_tokens": tokens, "temperature": 0, **body})
            if turn:
                ttfts.append(ttft)
            history += [{"role": "assistant", "content": text or "..."},
                        {"role": "user", "content": f"And then? (turn {turn + 1})"}]
            transcript += f"\nStoryteller:{text}\nReader: And then? (turn {turn + 1})"

    async with httpx.AsyncClient(timeout=600) as c:
        await asyncio.gather(*(user(c, u) for u in range(users)))
    return ttfts


def affinity(gw: Gw, rr: Gw, members: list[str], users: int, turns: int, tokens: int,
             raw: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, g in (("round_robin", rr), ("affinity", gw)):
        p0, c0 = cache_counters(members)
        ttfts = asyncio.run(chats(g.base, users, turns, tokens, salt=label, raw=raw))
        p1, c1 = cache_counters(members)
        out[f"{label}_cache_share"] = (c1 - c0) / max(1.0, p1 - p0)
        out[f"{label}_median_ttft_ms"] = statistics.median(ttfts) * 1000
        status = httpx.get(g.base + "/api/koboldtui/gateway").json()
        routing = status["routing"]
        out[f"{label}_left_in_flight"] = sum(i["in_flight"] for i in status["instances"])
        out[f"{label}_share_p1"] = routing["share"].get("p1", 0.0)
        if label == "affinity":
            out["affinity_hits"], out["affinity_misses"] = routing["affinity_hits"], routing["affinity_misses"]
    out["ttft_rr_over_affinity"] = out["round_robin_median_ttft_ms"] / out["affinity_median_ttft_ms"]
    return out


def on_demand(gw: Gw, sup: Supervisor) -> dict[str, float]:
    t0 = time.perf_counter()
    sup.start("cold", wait=True, timeout_s=300)
    load_s = time.perf_counter() - t0
    sup.stop("cold")
    time.sleep(1.0)
    deadline = time.monotonic() + 10  # the gateway's watcher sees it stopped
    while time.monotonic() < deadline:
        states = {m["id"]: m["state"] for m in httpx.get(gw.base + "/v1/models").json()["data"]}
        if states.get("cold") == "stopped":
            break
        time.sleep(0.2)
    t0 = time.perf_counter()
    r = httpx.post(gw.base + "/v1/completions", timeout=300,
                   json={"model": "cold", "prompt": "Hello", "max_tokens": 4, "temperature": 0})
    first_s = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return {"load_s": load_s, "first_request_s": first_s, "over_load_s": first_s - load_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a .gguf (default: the bundled model)")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--turn-tokens", type=int, default=24)
    parser.add_argument("--parallel", type=int, default=8, help="slots per pool instance (>= users / 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--raw", action="store_true",
                        help="affinity chats as plain transcripts on /v1/completions (no chat template)")
    parser.add_argument("--port", type=int, default=5600)
    parser.add_argument("--part", choices=("all", "overhead", "affinity", "ondemand"), default="all")
    args = parser.parse_args()

    model = str(resolve_model_path(args.model))  # before the throwaway home: the model stays where it is
    home = tempfile.mkdtemp(prefix="kt-gw-bench-")
    env = dict(os.environ, **{HOME_ENV: home})
    os.environ[HOME_ENV] = home
    paths = app_paths().ensure()
    store = InstanceStore(open_database(paths.database))
    p = args.port
    common = {"model": model, "threads": args.threads, "gpus": "cpu", "ctx": 2048}
    store.add("solo", InstanceSpec(name="solo", port=p + 1, parallel=args.streams, **common).to_dict())
    store.add("p1", InstanceSpec(name="p1", port=p + 2, parallel=args.parallel, alias="pool", **common).to_dict())
    store.add("p2", InstanceSpec(name="p2", port=p + 3, parallel=args.parallel, alias="pool", **common).to_dict())
    store.add("cold", InstanceSpec(name="cold", port=p + 4, parallel=1, **common).to_dict())
    sup = Supervisor(paths, store)
    results: dict[str, dict[str, float]] = {}
    gw = rr = None
    try:
        gw = Gw(p, env, "affinity")
        if args.part in ("all", "overhead"):
            sup.start("solo", wait=True, timeout_s=300)
            gw.wait_ready(["solo"])
            results["overhead"] = overhead(gw, f"http://127.0.0.1:{p + 1}", args.streams, args.tokens, args.rounds)
            sup.stop("solo")
        if args.part in ("all", "affinity"):
            for name in ("p1", "p2"):
                sup.start(name, wait=True, timeout_s=300)
            rr = Gw(p + 10, env, "round-robin")
            gw.wait_ready(["p1", "p2"])
            rr.wait_ready(["p1", "p2"])
            members = [f"http://127.0.0.1:{p + 2}", f"http://127.0.0.1:{p + 3}"]
            results["affinity"] = affinity(gw, rr, members, args.users, args.turns, args.turn_tokens, args.raw)
            sup.stop("p1")
            sup.stop("p2")
        if args.part in ("all", "ondemand"):
            results["on_demand"] = on_demand(gw, sup)
    finally:
        for g in (gw, rr):
            if g is not None:
                g.close()
        sup.stop_all()
        for name in store.names():
            sup.stop(name)
    print(json.dumps({"settings": vars(args), **results}, indent=2))


if __name__ == "__main__":
    main()

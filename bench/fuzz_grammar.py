"""Grammar and JSON-schema fuzz against a real ``koboldtui serve`` (the bundled model).

Sends ``--cases`` seeded hostile requests (tests/grammar_fuzz.py: deep nesting, huge
repeats, NUL, unanchored patterns, ``$ref``s, random GBNF soups, list fields as deeply
nested JSON text) from a few clients at once, while another client polls /health.
Prints the answers by kind and status, the slowest /health, and the instance's RSS before
and after. What must hold: 0 crashes (the process lives, no connection is dropped) and
0 × 5xx; README's Reliability section has the numbers.

    PYTHONPATH=$PWD python bench/fuzz_grammar.py --cases 5000
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koboldtui.models.bundled import resolve_model_path
from tests.grammar_fuzz import body_bytes, random_case
from tests.instance_harness import free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(model: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "koboldtui.cli", "serve", "--model", str(model), "--port",
                             str(port), "--ctx", "512", "--parallel", "2", "--queue-timeout", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the instance did not start")


def run(base: str, pid: int, cases: int, seed: int, clients: int) -> dict[str, object]:
    """Send the cases; return the counts (shared with tests/test_grammar_fuzz.py)."""
    rng = random.Random(seed)
    work = [random_case(rng) for _ in range(cases)]
    counts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    bad: list[str] = []
    health: list[float] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=base, timeout=10) as c:
            while not done.is_set():
                t0 = time.perf_counter()
                try:
                    c.get("/health")
                    health.append(time.perf_counter() - t0)
                except httpx.HTTPError:
                    health.append(float("inf"))
                time.sleep(0.05)

    def send(case: tuple[str, str, dict[str, object]]) -> None:
        kind, path, body = case
        started = time.perf_counter()
        with httpx.Client(base_url=base, timeout=120) as c:
            try:
                r = c.post(path, content=body_bytes(body), headers={"Content-Type": "application/json"})
                status = f"{r.status_code // 100}xx"
                if r.status_code >= 500:
                    bad.append(f"{kind} {r.status_code} {r.text[:300]}")
            except httpx.HTTPError as exc:
                status = "dropped"
                bad.append(f"{kind} dropped: {exc!r}")
        counts[f"{kind} {status}"] += 1
        seconds[f"{kind} {status}"] += time.perf_counter() - started
        statuses[status] += 1

    before = rss_mb(pid)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, work))
    elapsed = time.perf_counter() - t0
    done.set()
    poller.join()
    return {"counts": counts, "statuses": statuses, "seconds": seconds, "bad": bad, "health_max_s": max(health, default=0.0),
            "health_n": len(health), "rss_before_mb": before, "rss_after_mb": rss_mb(pid), "elapsed_s": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    port = free_port()
    proc = start(resolve_model_path(args.model), port)
    try:
        result = run(f"http://127.0.0.1:{port}", proc.pid, args.cases, args.seed, args.clients)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    counts: Counter[str] = result["counts"]  # type: ignore[assignment]
    seconds: Counter[str] = result["seconds"]  # type: ignore[assignment]
    print(f"{'kind and answer':45} {'count':>6} {'mean s':>7}")
    for key in sorted(counts):
        print(f"{key:45} {counts[key]:6} {seconds[key] / counts[key]:7.2f}")
    print(f"statuses: {dict(result['statuses'])}")  # type: ignore[arg-type]
    print(f"instance alive at the end: {alive}; 5xx or dropped: {len(result['bad'])}")  # type: ignore[arg-type]
    for line in result["bad"][:20]:  # type: ignore[index]
        print("  ", line)
    print(f"/health: {result['health_n']} polls, slowest {result['health_max_s']:.3f} s")
    print(f"RSS {result['rss_before_mb']:.0f} -> {result['rss_after_mb']:.0f} MB; {args.cases} cases in "
          f"{result['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()

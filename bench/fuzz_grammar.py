"""Grammar and JSON-schema fuzz against a real ``koboldtui serve`` (the bundled model).

Sends ``--cases`` seeded hostile requests (tests/grammar_fuzz.py: deep nesting, huge
repeats, NUL, unanchored patterns, ``$ref``s, random GBNF soups, list fields as deeply
nested JSON text) from a few clients at once, while another client polls /health.
Prints the answers by kind and status, the slowest /health, and the instance's RSS before
and after. What must hold: 0 crashes (the process lives, no connection is dropped) and
0 × 5xx and no request without an answer (each client waits 120 s; with at most one
request per slot in flight nothing queues, so a timeout is a stall, not a slow queue);
README's Reliability section has the numbers.

    PYTHONPATH=$PWD python bench/fuzz_grammar.py --cases 5000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from koboldtui.models.bundled import resolve_model_path
from tests.grammar_fuzz import run
from tests.instance_harness import free_port


def start(model: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "koboldtui.cli", "serve", "--model", str(model), "--port",
                             str(port), "--ctx", "512", "--parallel", "4", "--queue-timeout", "600"],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model", default=None)
    parser.add_argument("--generate-share", type=float, default=1.0,
                        help="keep this share of the valid-grammar and response_format cases (they decode)")
    args = parser.parse_args()
    port = free_port()
    proc = start(resolve_model_path(args.model), port)
    try:
        result = run(f"http://127.0.0.1:{port}", proc.pid, args.cases, args.seed, args.clients,
                     args.generate_share)
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
    print(f"/health: {result['health_n']} polls, slowest {result['health_max_s']:.3f} s, "
          f"not 200 (wedged): {result['health_not_ok']}")
    spent, kind = result["slowest_s"]  # type: ignore[misc]
    print(f"slowest request: {spent:.1f} s ({kind}); a timeout is a stalled instance, not a slow one "
          "(at most 4 requests are in flight, one per slot, max_length 1)")
    print(f"RSS {result['rss_before_mb']:.0f} -> {result['rss_after_mb']:.0f} MB; {args.cases} cases in "
          f"{result['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()

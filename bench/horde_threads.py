"""Horde worker threads side by side: requester wait and jobs/hour at the same load.

A real instance (bundled model, real engine, ``--parallel 4``) works for the fake AI Horde
(tests/fake_horde.py on 127.0.0.1). The same schedule of requests reaches the fake in both
runs — one every ``--gap`` seconds, each asking ``--max-length`` tokens (EOS banned, so
every job costs the same) — and the worker pops them as real workers do. Run 1 uses one
Horde thread (the old default); run 2 the new default (0 = every spare slot: parallel − 1).

Prints, per run: requester wait (arrival at the Horde → result submitted) median / p90 /
max, jobs/hour (jobs ÷ first arrival → last submit) and kudos/hour (the fake rewards a flat
10 kudos per job, so it follows jobs/hour; the real Horde pays by tokens and speed).

    PYTHONPATH=. python bench/horde_threads.py [--jobs 24] [--gap 1.0] [--max-length 48] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fake_horde import FakeHorde, job_reply  # noqa: E402

from koboldtui.config import HordeSettings, ServeConfig  # noqa: E402
from koboldtui.models.bundled import resolve_model_path  # noqa: E402
from tests.instance_harness import running_instance  # noqa: E402

PARALLEL = 4


def run(threads: int, args: argparse.Namespace, model: Path) -> dict[str, float]:
    """One run at the given --horde-threads against a fresh fake Horde; its numbers."""
    with FakeHorde() as horde:
        settings = HordeSettings(enabled=True, api_key="good-key", worker_name=f"bench-threads-{threads}",
                                 url=horde.url, window_s=0.5, threads=threads, max_length=512)
        config = ServeConfig(ctx=512, parallel=PARALLEL, batch_size=128, max_queue=16, horde=settings)
        with running_instance(config, model) as (base, _):
            status = httpx.get(base + "/api/koboldtui/status", timeout=10).json()["horde"]
            arrivals: dict[str, float] = {}
            lock = threading.Lock()

            def feed() -> None:  # the requesters: one job every --gap seconds, on a fixed schedule
                start = time.monotonic()
                for i in range(args.jobs):
                    delay = start + i * args.gap - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    job = job_reply(f"Request {i}: Once upon a time, in a land far away,",
                                    max_length=args.max_length, max_context_length=512,
                                    use_default_badwordsids=True, temperature=0.7, seed=i)
                    with lock:
                        arrivals[job["ids"][0]] = time.monotonic()
                        horde.pop_script.append(job)

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            deadline = time.monotonic() + args.jobs * args.gap + 600
            while len(horde.submits()) < args.jobs:
                if time.monotonic() > deadline:
                    raise SystemExit(f"threads={threads}: only {len(horde.submits())} of {args.jobs} jobs came back")
                time.sleep(0.1)
            kudos = httpx.get(base + "/api/koboldtui/status", timeout=10).json()["horde"]["kudos_session"]
        submits = {s.json["id"]: s.at for s in horde.submits() if s.json.get("state") == "ok"}
    waits = sorted(submits[i] - arrivals[i] for i in arrivals if i in submits)
    span_h = (max(submits.values()) - min(arrivals.values())) / 3600
    return {"threads": status["threads"], "ok": len(waits), "median": statistics.median(waits),
            "p90": waits[int(0.9 * (len(waits) - 1))], "max": waits[-1], "jobs_h": len(waits) / span_h,
            "kudos_h": kudos / span_h, "max_length": status["max_length"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between two requests reaching the Horde")
    parser.add_argument("--max-length", type=int, default=48, help="tokens each request asks for")
    parser.add_argument("--rounds", type=int, default=1,
                        help="pairs of runs, the order swapped each round (a shared machine's load drifts)")
    args = parser.parse_args()
    model = resolve_model_path(None)
    labels = {1: "1 (old default)", 0: "0 (new default)"}
    rows: list[tuple[int, str, dict[str, float]]] = []
    for round_no in range(1, args.rounds + 1):
        for threads in ((1, 0) if round_no % 2 else (0, 1)):
            rows.append((round_no, labels[threads], run(threads, args, model)))
    print(f"{args.jobs} jobs, one every {args.gap:g} s, {args.max_length} tokens each; --parallel {PARALLEL}")
    print(f"{'round':>5} {'--horde-threads':>16} {'threads':>7} {'ok':>4} {'wait median':>11} {'p90':>7} "
          f"{'max':>7} {'jobs/hour':>9} {'kudos/hour':>10}")
    for round_no, label, row in rows:
        print(f"{round_no:>5} {label:>16} {row['threads']:>7} {row['ok']:>4} {row['median']:>10.1f}s "
              f"{row['p90']:>6.1f}s {row['max']:>6.1f}s {row['jobs_h']:>9.0f} {row['kudos_h']:>10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

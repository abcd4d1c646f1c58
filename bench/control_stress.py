"""The long run of the control stress test: two controllers and a killer on three instances, >= 5,000 operations.

    PYTHONPATH=. python bench/control_stress.py [--ops 5000] [--seed 1] [--runs 1]

Same run and checks as ``tests/test_control_stress.py`` (see ``tests/control_stress.py``):
two OS processes, each a ``Supervisor`` that polls from a thread of its own while it
starts, stops and restarts the same three instances at random; a third process SIGKILLs
or SIGSTOPs+SIGCONTs their processes. Prints what was done and what the checks found
(every "found" count must be 0), and how long operations took. Then ``ps`` with five
remote instances that accept connections and never answer: its wall time, best of 5.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.control_stress import run_stress  # noqa: E402


def ps_with_silent_remotes(home: Path, count: int = 5, rounds: int = 5) -> list[float]:
    """Wall seconds of ``koboldtui ps --json`` (in process) with ``count`` remotes that never answer."""
    os.environ["KOBOLDTUI_HOME"] = str(home)
    from koboldtui.cli import main
    from koboldtui.control.registry import InstanceRegistry
    from koboldtui.control.spec import InstanceSpec
    from koboldtui.paths import app_paths
    from koboldtui.store.db import open_database
    from koboldtui.store.instances import InstanceStore

    paths = app_paths().ensure()
    registry = InstanceRegistry(InstanceStore(open_database(paths.database)), paths)
    socks = []
    for i in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        socks.append(sock)
        port = sock.getsockname()[1]
        registry.add(InstanceSpec(name=f"far{i}", port=port, kind="remote", url=f"http://127.0.0.1:{port}"))
    times = []
    with contextlib.redirect_stdout(io.StringIO()):
        main(["ps"])  # imports warm
        for _ in range(rounds):
            began = time.perf_counter()
            main(["ps", "--json"])
            times.append(time.perf_counter() - began)
    for sock in socks:
        sock.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000, help="operations in all (two drivers)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    bad = 0
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            r = run_stress(args.ops // 2, home=Path(tmp) / "home", seed=args.seed + run, timeout_s=3600)
        found = {
            "tracebacks": len(r.tracebacks),
            "ps disagrees": len(r.ps_disagrees),
            "running after a stop": len(r.running_after_stop),
            "orphans": len(r.orphans),
            "two processes for one instance": len(r.duplicates),
            "left after the final stop": len(r.final_left),
        }
        bad += sum(found.values())
        print(f"run {run + 1} (seed {args.seed + run}): {r.ops} operations {r.by_op} in {r.seconds:.1f} s "
              f"({r.ops_per_s:.0f}/s), {r.refused} refused; killer: {r.kills} SIGKILL, "
              f"{r.pauses} SIGSTOP+SIGCONT; operation p50 {r.op_ms_p50:.0f} ms, p99 {r.op_ms_p99:.0f} ms")
        print("  found: " + ", ".join(f"{k} {v}" for k, v in found.items()))
        for line in (r.tracebacks + r.ps_disagrees + r.running_after_stop + r.duplicates)[:5]:
            print("   ", str(line)[-500:])
    for count in (0, 5):
        with tempfile.TemporaryDirectory() as tmp:
            times = ps_with_silent_remotes(Path(tmp), count)
        print(f"ps with {count} silent remote instances: best {min(times) * 1000:.0f} ms, "
              f"worst {max(times) * 1000:.0f} ms of {len(times)}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
